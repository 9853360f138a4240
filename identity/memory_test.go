package identity_test

import (
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/identity/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) identity.Store {
		s := identity.NewMemoryStore()
		t.Cleanup(func() { s.Close() })
		return s
	})
}
