package identity_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/identity/storetest"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// TestRedisStoreSentinel runs the conformance suite against a real Redis
// reached through a real Sentinel, with the URL form operators configure
// (redis://sentinel:port/0?master_name=NAME): OpenRedis builds a failover
// client from it.
func TestRedisStoreSentinel(t *testing.T) {
	testenv.Require(t)
	leakCheck(t)
	master := testenv.StartRedis(t)
	sentinel := testenv.StartSentinel(t, master, "cusaxmaster")
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) identity.Store {
		s, err := identity.OpenRedis(sentinel.URL, identity.RedisOptions{KeyPrefix: fmt.Sprintf("sn%d:", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
