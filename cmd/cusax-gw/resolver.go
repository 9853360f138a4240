package main

import (
	"context"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
)

// callerResolver adapts the identity directory to b2bua.Resolver: a
// caller's sip:/sips:/tel: URI (or a SIP URI whose user part is a number)
// to the JID and name of the identity owning it. It answers from the
// directory's cache; only before the cache is loaded does it ask the store,
// with a short bound so an INVITE never waits long on Redis.
type callerResolver struct {
	dir     *identity.Directory
	timeout time.Duration
}

func (r callerResolver) Resolve(uri string) (jid, name string, ok bool) {
	norm := r.dir.Normalizer()
	var keys []identity.Key
	if k, err := norm.Key(uri); err == nil {
		keys = append(keys, k)
	}
	if k, ok := norm.NumberKeyFromAOR(uri); ok {
		keys = append(keys, k)
	}
	for _, k := range keys {
		id, found, warm := r.dir.LookupKey(k)
		if !warm {
			// Cache not loaded yet: ask the store for the URI itself.
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			defer cancel()
			id, err := r.dir.Lookup(ctx, uri)
			if err != nil {
				return "", "", false
			}
			return id.JID, id.Name, true
		}
		if found {
			return id.JID, id.Name, true
		}
	}
	return "", "", false
}
