package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Digest credentials (sip.auth: local). What the suite requires:
//
//   - SetCredential stores a credential for an AOR of the named identity
//     and records that JID in it; Credential returns it (JID filled in).
//     A second SetCredential replaces the first.
//   - SetCredential for an unknown JID fails with ErrNotFound; for an AOR
//     the JID does not own (nobody's, or another identity's) with a
//     *identity.FieldError naming "sip". Neither stores anything.
//   - Deleting the identity, or Put without the AOR, deletes the
//     credential: the AOR never gets it back, whoever owns it next.
//   - DeleteCredential removes it; ErrNotFound when there is none or the
//     JID does not own it.
//   - Credential writes change neither the revision nor the change feed,
//     and no identity, event or List page carries a hash.

func cred(t *testing.T, aor, password string) identity.Credential {
	t.Helper()
	c, err := identity.NewCredential(aor, "example.com", password)
	if err != nil {
		t.Fatalf("NewCredential(%s) = %v", aor, err)
	}
	return c
}

func wantCredential(t *testing.T, ctx context.Context, s identity.Store, aor string, want identity.Credential) {
	t.Helper()
	got, err := s.Credential(ctx, aor)
	if err != nil {
		t.Fatalf("Credential(%s) = %v, want %v", aor, err, want)
	}
	if got != want {
		t.Fatalf("Credential(%s) = %+v (ha1 %s/%s), want %+v", aor, got, got.HA1MD5, got.HA1SHA256, want)
	}
}

func wantNoCredential(t *testing.T, ctx context.Context, s identity.Store, aor string) {
	t.Helper()
	if got, err := s.Credential(ctx, aor); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("Credential(%s) = %v, %v, want ErrNotFound", aor, got, err)
	}
}

func testCredentialSetGet(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	aor := alice.SIP[1]
	wantNoCredential(t, ctx, s, aor)
	r0 := mustRev(t, ctx, s)
	ch, err := s.Watch(ctx, r0)
	if err != nil {
		t.Fatal(err)
	}
	c := cred(t, aor, "correct horse")
	if err := s.SetCredential(ctx, alice.JID, aor, c); err != nil {
		t.Fatalf("SetCredential = %v", err)
	}
	c.JID = alice.JID
	wantCredential(t, ctx, s, aor, c)
	wantNoCredential(t, ctx, s, alice.SIP[0])

	c2 := cred(t, aor, "battery staple")
	if err := s.SetCredential(ctx, alice.JID, aor, c2); err != nil {
		t.Fatalf("SetCredential (replace) = %v", err)
	}
	c2.JID = alice.JID
	wantCredential(t, ctx, s, aor, c2)

	if r := mustRev(t, ctx, s); r != r0 {
		t.Errorf("Rev after SetCredential = %d, want %d (unchanged)", r, r0)
	}
	// The next event is bob's creation: credential writes emit none.
	mustCreate(t, ctx, s, bob)
	ev := next(t, ch)
	wantEvent(t, ev, identity.OpPut, r0+1, bob)

	// No hash anywhere an identity travels.
	got, err := s.Get(ctx, alice.JID)
	if err != nil {
		t.Fatal(err)
	}
	ids, _, err := s.List(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{got, ids, ev} {
		b, _ := json.Marshal(v)
		for _, h := range []string{c.HA1MD5, c.HA1SHA256, c2.HA1MD5, c2.HA1SHA256} {
			if strings.Contains(string(b), h) {
				t.Errorf("%s carries a credential hash", b)
			}
		}
	}
}

func testCredentialNotOwned(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	r0 := mustRev(t, ctx, s)
	for _, tc := range []struct {
		jid, aor string
		notFound bool
	}{
		{"carol@example.com", "sip:carol@example.com", true}, // no such identity
		{alice.JID, "sip:nobody@example.com", false},         // nobody owns the AOR
		{alice.JID, bob.SIP[0], false},                       // bob owns it
	} {
		err := s.SetCredential(ctx, tc.jid, tc.aor, cred(t, tc.aor, "pw"))
		var fe *identity.FieldError
		switch {
		case tc.notFound && !errors.Is(err, identity.ErrNotFound):
			t.Errorf("SetCredential(%s, %s) = %v, want ErrNotFound", tc.jid, tc.aor, err)
		case !tc.notFound && (!errors.As(err, &fe) || fe.Field != "sip"):
			t.Errorf("SetCredential(%s, %s) = %v, want a FieldError on sip", tc.jid, tc.aor, err)
		}
		wantNoCredential(t, ctx, s, tc.aor)
	}
	if err := s.SetCredential(ctx, alice.JID, alice.SIP[0], identity.Credential{Username: "alice", Realm: "example.com"}); !errors.Is(err, identity.ErrInvalid) {
		t.Errorf("SetCredential(no hashes) = %v, want ErrInvalid", err)
	}
	if err := s.SetCredential(ctx, alice.JID, alice.SIP[0], identity.Credential{Username: "alice", Realm: "example.com", HA1MD5: "secret"}); !errors.Is(err, identity.ErrInvalid) {
		t.Errorf("SetCredential(malformed hash) = %v, want ErrInvalid", err)
	}
	wantNoCredential(t, ctx, s, alice.SIP[0])
	if r := mustRev(t, ctx, s); r != r0 {
		t.Errorf("Rev after failed SetCredential = %d, want %d", r, r0)
	}
}

func testCredentialDeletedWithIdentity(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	for _, a := range alice.SIP {
		if err := s.SetCredential(ctx, alice.JID, a, cred(t, a, "pw")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, alice.JID); err != nil {
		t.Fatal(err)
	}
	for _, a := range alice.SIP {
		wantNoCredential(t, ctx, s, a)
	}
	// A new owner of the AOR does not inherit the old password.
	mustCreate(t, ctx, s, alice)
	for _, a := range alice.SIP {
		wantNoCredential(t, ctx, s, a)
	}
}

func testCredentialFreedByPut(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	kept, dropped := alice.SIP[0], alice.SIP[1]
	ck := cred(t, kept, "pw1")
	for _, a := range alice.SIP {
		if err := s.SetCredential(ctx, alice.JID, a, cred(t, a, "pw1")); err != nil {
			t.Fatal(err)
		}
	}
	less := alice.Clone()
	less.SIP = []string{kept}
	mustPut(t, ctx, s, less)
	ck.JID = alice.JID
	wantCredential(t, ctx, s, kept, ck)
	wantNoCredential(t, ctx, s, dropped)

	// bob takes the freed AOR: no password comes with it.
	b := bob.Clone()
	b.SIP = append(b.SIP, dropped)
	mustPut(t, ctx, s, b)
	wantNoCredential(t, ctx, s, dropped)
	// alice writing it back does not revive hers either.
	mustPut(t, ctx, s, bob)
	mustPut(t, ctx, s, alice)
	wantNoCredential(t, ctx, s, dropped)
	wantCredential(t, ctx, s, kept, ck)
}

func testCredentialDelete(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	mustCreate(t, ctx, s, bob)
	a := alice.SIP[0]
	if err := s.DeleteCredential(ctx, alice.JID, a); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("DeleteCredential(none set) = %v, want ErrNotFound", err)
	}
	if err := s.SetCredential(ctx, alice.JID, a, cred(t, a, "pw")); err != nil {
		t.Fatal(err)
	}
	r0 := mustRev(t, ctx, s)
	if err := s.DeleteCredential(ctx, bob.JID, a); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("DeleteCredential(bob, alice's AOR) = %v, want ErrNotFound", err)
	}
	if _, err := s.Credential(ctx, a); err != nil {
		t.Errorf("Credential after a refused delete = %v", err)
	}
	if err := s.DeleteCredential(ctx, alice.JID, a); err != nil {
		t.Errorf("DeleteCredential = %v", err)
	}
	wantNoCredential(t, ctx, s, a)
	if err := s.DeleteCredential(ctx, alice.JID, a); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("DeleteCredential(again) = %v, want ErrNotFound", err)
	}
	if r := mustRev(t, ctx, s); r != r0 {
		t.Errorf("Rev after DeleteCredential = %d, want %d", r, r0)
	}
}

func testCredentialClosed(t *testing.T, open func(*testing.T) identity.Store) {
	ctx := ctxFor(t)
	s := open(t)
	mustCreate(t, ctx, s, alice)
	a := alice.SIP[0]
	c := cred(t, a, "pw")
	if err := s.SetCredential(ctx, alice.JID, a, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredential(ctx, alice.JID, a, c); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("SetCredential after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Credential(ctx, a); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("Credential after Close = %v, want ErrClosed", err)
	}
	if err := s.DeleteCredential(ctx, alice.JID, a); !errors.Is(err, identity.ErrClosed) {
		t.Errorf("DeleteCredential after Close = %v, want ErrClosed", err)
	}
}
