package identity_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/cusax-gw/cusax-gw/identity"
)

func ExampleNewMemoryStore() {
	ctx := context.Background()
	norm, _ := identity.NewNormalizer("US")
	store := identity.NewMemoryStore() // or identity.OpenBolt(path, identity.BoltOptions{})
	defer store.Close()

	// Follow changes from the current revision, as a cache would.
	rev, _ := store.Rev(ctx)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events, _ := store.Watch(wctx, rev)

	alice, err := norm.Identity(identity.Identity{
		JID:  "Alice@Example.com",
		SIP:  []string{"<sip:alice@EXAMPLE.com:5060>"},
		Tel:  []string{"(555) 123-0001"},
		Name: "Alice",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := store.Create(ctx, alice); err != nil {
		fmt.Println(err)
		return
	}
	ev := <-events
	fmt.Println(ev.Op, ev.Rev, ev.JID)

	// Resolve a caller by number.
	key, _ := norm.Key("tel:+1-555-123-0001")
	id, _ := store.Lookup(ctx, key)
	fmt.Println(id.JID, id.SIP, id.Tel)

	// A number has one owner.
	_, err = store.Create(ctx, identity.Identity{JID: "bob@example.com", Tel: []string{"+15551230001"}})
	var conflict *identity.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println(err)
	}
	// Output:
	// put 1 alice@example.com
	// alice@example.com [sip:alice@example.com] [+15551230001]
	// identity: tel +15551230001 already belongs to alice@example.com
}
