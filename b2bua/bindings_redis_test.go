package b2bua

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// newFakeClock returns a fakeClock (register_test.go) at the current
// time: a real Redis applies its own clock to the keys' TTLs.
func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Now().Truncate(time.Millisecond)}
}

// bindingsEnv is one store under test with its clock.
type bindingsEnv struct {
	s   Bindings
	now func() time.Time
	// advance moves the store's notion of time (and the server's, if it
	// can) forward by d.
	advance func(d time.Duration)
}

// testBindings runs the behavioural checks every Bindings store must
// pass. newEnv returns a fresh, empty store for each subtest.
func testBindings(t *testing.T, newEnv func(t *testing.T) bindingsEnv) {
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		return ctx
	}
	mk := func(e bindingsEnv, token, aor string, ttl time.Duration) Binding {
		return Binding{
			Token:     token,
			AOR:       aor,
			Contact:   "<sip:" + token + "@192.0.2.10:5062>",
			Source:    "192.0.2.10:5062",
			Transport: "UDP",
			CallID:    "call-" + token,
			Expires:   e.now().Add(ttl),
		}
	}
	put := func(t *testing.T, e bindingsEnv, bs ...Binding) {
		t.Helper()
		for _, b := range bs {
			if err := e.s.Put(ctx(t), b); err != nil {
				t.Fatalf("Put(%s) = %v, want nil", b.Token, err)
			}
		}
	}
	wantToken := func(t *testing.T, e bindingsEnv, want Binding) {
		t.Helper()
		got, err := e.s.ByToken(ctx(t), want.Token)
		if err != nil || !sameBinding(got, want) {
			t.Errorf("ByToken(%s) = %+v, %v, want %+v, nil", want.Token, got, err, want)
		}
	}
	wantGone := func(t *testing.T, e bindingsEnv, token string) {
		t.Helper()
		if got, err := e.s.ByToken(ctx(t), token); !errors.Is(err, ErrNotFound) {
			t.Errorf("ByToken(%s) = %+v, %v, want ErrNotFound", token, got, err)
		}
	}
	wantAOR := func(t *testing.T, e bindingsEnv, aor string, want ...Binding) {
		t.Helper()
		got, err := e.s.ByAOR(ctx(t), aor)
		if err != nil {
			t.Fatalf("ByAOR(%s) = %v, want nil error", aor, err)
		}
		byToken := func(a, b Binding) int { return cmp.Compare(a.Token, b.Token) }
		slices.SortFunc(got, byToken)
		want = slices.Clone(want)
		slices.SortFunc(want, byToken)
		if !slices.EqualFunc(got, want, sameBinding) {
			t.Errorf("ByAOR(%s) = %+v, want %+v", aor, got, want)
		}
	}
	wantLen := func(t *testing.T, e bindingsEnv, want int) {
		t.Helper()
		if got, err := e.s.Len(ctx(t)); err != nil || got != want {
			t.Errorf("Len() = %d, %v, want %d, nil", got, err, want)
		}
	}
	wantExpire := func(t *testing.T, e bindingsEnv, want int) {
		t.Helper()
		if got, err := e.s.Expire(ctx(t), e.now()); err != nil || got != want {
			t.Errorf("Expire(now) = %d, %v, want %d, nil", got, err, want)
		}
	}
	const alice, bob = "sip:alice@example.com", "sip:bob@example.com"

	t.Run("empty", func(t *testing.T) {
		e := newEnv(t)
		wantGone(t, e, "cx-none")
		wantAOR(t, e, alice)
		wantLen(t, e, 0)
		wantExpire(t, e, 0)
	})
	t.Run("put and get", func(t *testing.T) {
		e := newEnv(t)
		a1, a2, b1 := mk(e, "cx-a1", alice, time.Hour), mk(e, "cx-a2", alice, time.Hour), mk(e, "cx-b1", bob, time.Hour)
		put(t, e, a1, a2, b1)
		wantToken(t, e, a1)
		wantToken(t, e, b1)
		wantGone(t, e, "cx-none")
		wantAOR(t, e, alice, a1, a2)
		wantAOR(t, e, bob, b1)
		wantAOR(t, e, "sip:carol@example.com")
		wantLen(t, e, 3)
	})
	t.Run("refresh replaces", func(t *testing.T) {
		e := newEnv(t)
		a1 := mk(e, "cx-a1", alice, time.Minute)
		put(t, e, a1)
		a1b := mk(e, "cx-a1", alice, time.Hour)
		a1b.Source, a1b.Transport, a1b.CallID = "198.51.100.7:40000", "TCP", "call-2"
		put(t, e, a1b)
		wantToken(t, e, a1b)
		wantAOR(t, e, alice, a1b)
		wantLen(t, e, 1)
		// The refresh outlives the first registration.
		e.advance(2 * time.Minute)
		wantToken(t, e, a1b)
		wantAOR(t, e, alice, a1b)
		wantLen(t, e, 1)
		wantExpire(t, e, 0)
	})
	t.Run("refresh shortens", func(t *testing.T) {
		e := newEnv(t)
		put(t, e, mk(e, "cx-a1", alice, time.Hour))
		a1 := mk(e, "cx-a1", alice, time.Minute)
		put(t, e, a1)
		wantToken(t, e, a1)
		e.advance(2 * time.Minute)
		wantGone(t, e, "cx-a1")
		wantAOR(t, e, alice)
		wantLen(t, e, 0)
		wantExpire(t, e, 1)
	})
	t.Run("refresh moves AOR", func(t *testing.T) {
		e := newEnv(t)
		put(t, e, mk(e, "cx-x", alice, time.Hour))
		x := mk(e, "cx-x", bob, time.Hour)
		put(t, e, x)
		wantAOR(t, e, alice)
		wantAOR(t, e, bob, x)
		wantLen(t, e, 1)
	})
	t.Run("expiry", func(t *testing.T) {
		e := newEnv(t)
		a1, a2, b1 := mk(e, "cx-a1", alice, 30*time.Second), mk(e, "cx-a2", alice, 90*time.Second), mk(e, "cx-b1", bob, 30*time.Second)
		put(t, e, a1, a2, b1)
		e.advance(30 * time.Second) // exactly at a1's and b1's Expires: lapsed
		wantGone(t, e, "cx-a1")
		wantGone(t, e, "cx-b1")
		wantToken(t, e, a2)
		wantAOR(t, e, alice, a2)
		wantAOR(t, e, bob)
		wantLen(t, e, 1)
		wantExpire(t, e, 2)
		wantExpire(t, e, 0)
		wantLen(t, e, 1)
		wantToken(t, e, a2)
		e.advance(time.Minute)
		wantGone(t, e, "cx-a2")
		wantAOR(t, e, alice)
		wantLen(t, e, 0)
		wantExpire(t, e, 1)
		// A phone registering again after expiry is back.
		a1 = mk(e, "cx-a1", alice, time.Hour)
		put(t, e, a1)
		wantAOR(t, e, alice, a1)
		wantLen(t, e, 1)
	})
	t.Run("expire without reads", func(t *testing.T) {
		e := newEnv(t)
		put(t, e, mk(e, "cx-a1", alice, time.Second), mk(e, "cx-a2", alice, time.Hour), mk(e, "cx-b1", bob, time.Second))
		e.advance(time.Minute)
		wantExpire(t, e, 2)
		wantLen(t, e, 1)
		wantGone(t, e, "cx-a1")
	})
	t.Run("delete", func(t *testing.T) {
		e := newEnv(t)
		a1, a2 := mk(e, "cx-a1", alice, time.Hour), mk(e, "cx-a2", alice, time.Hour)
		put(t, e, a1, a2)
		if err := e.s.Delete(ctx(t), "cx-a1"); err != nil {
			t.Fatalf("Delete(cx-a1) = %v, want nil", err)
		}
		wantGone(t, e, "cx-a1")
		wantToken(t, e, a2)
		wantAOR(t, e, alice, a2)
		wantLen(t, e, 1)
		for _, tok := range []string{"cx-a1", "cx-none"} {
			if err := e.s.Delete(ctx(t), tok); err != nil {
				t.Errorf("Delete(%s) again = %v, want nil", tok, err)
			}
		}
		if err := e.s.Delete(ctx(t), "cx-a2"); err != nil {
			t.Fatalf("Delete(cx-a2) = %v, want nil", err)
		}
		wantAOR(t, e, alice)
		wantLen(t, e, 0)
		wantExpire(t, e, 0)
	})
	t.Run("concurrent", func(t *testing.T) {
		e := newEnv(t)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for j := range 10 {
					b := mk(e, fmt.Sprintf("cx-%d-%d", i, j), alice, time.Hour)
					if err := e.s.Put(ctx(t), b); err != nil {
						t.Errorf("Put(%s) = %v, want nil", b.Token, err)
					}
					if _, err := e.s.ByAOR(ctx(t), alice); err != nil {
						t.Errorf("ByAOR(%s) = %v, want nil", alice, err)
					}
				}
			})
		}
		wg.Wait()
		wantLen(t, e, 80)
	})
}

// sameBinding compares bindings field by field, Expires with Equal (a
// stored binding comes back in UTC without a monotonic reading).
func sameBinding(a, b Binding) bool {
	ea, eb := a.Expires, b.Expires
	a.Expires, b.Expires = time.Time{}, time.Time{}
	return a == b && ea.Equal(eb)
}

func TestMemoryBindingsConformance(t *testing.T) {
	testBindings(t, func(t *testing.T) bindingsEnv {
		c := newFakeClock()
		return bindingsEnv{
			s:       NewMemoryBindings(c.Now),
			now:     c.Now,
			advance: c.Advance,
		}
	})
}

// newMiniClient starts a miniredis and returns it with a client for it,
// both closed when the test ends.
func newMiniClient(t *testing.T) (*miniredis.Miniredis, redis.UniversalClient) {
	t.Helper()
	m := miniredis.RunT(t)
	// miniredis runs Lua slowly under the race detector: the tests give
	// every call a long deadline.
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1, ReadTimeout: time.Minute})
	t.Cleanup(func() { _ = c.Close() })
	return m, c
}

// TestRedisBindingsMiniredis runs the checks on miniredis, its clock
// pinned to the store's: advancing time also runs out the keys' TTLs
// (FastForward), so reads see keys vanish as on a real server.
func TestRedisBindingsMiniredis(t *testing.T) {
	testBindings(t, func(t *testing.T) bindingsEnv {
		m, c := newMiniClient(t)
		clk := newFakeClock()
		m.SetTime(clk.Now())
		s := NewRedisBindings(c, "", 0)
		s.now = clk.Now
		return bindingsEnv{
			s:   s,
			now: clk.Now,
			advance: func(d time.Duration) {
				clk.Advance(d)
				m.SetTime(clk.Now())
				m.FastForward(d)
			},
		}
	})
}

// newRealClient returns a client for r, closed when the test ends.
func newRealClient(t *testing.T, r *testenv.Redis) redis.UniversalClient {
	t.Helper()
	o, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	o.ContextTimeoutEnabled = true
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisBindingsReal runs the checks on a real redis-server. Its
// clock cannot be moved, so only the gateway's clock advances: the
// bindings lapse by the store's own filtering and Expire, with their keys
// still in Redis (what a gateway whose clock runs ahead sees).
func TestRedisBindingsReal(t *testing.T) {
	r := testenv.StartRedis(t)
	c := newRealClient(t, r)
	var n atomic.Int64
	testBindings(t, func(t *testing.T) bindingsEnv {
		clk := newFakeClock()
		s := NewRedisBindings(c, fmt.Sprintf("test%d:", n.Add(1)), 0)
		s.now = clk.Now
		return bindingsEnv{s: s, now: clk.Now, advance: clk.Advance}
	})
}

// testTwoGateways checks that two gateways sharing one Redis (one client
// each) see each other's bindings, and that another prefix sees none.
func testTwoGateways(t *testing.T, c1, c2 redis.UniversalClient) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g1 := NewRedisBindings(c1, "gw:", 0)
	g2 := NewRedisBindings(c2, "gw:", 0)
	other := NewRedisBindings(c2, "other:", 0)
	b := Binding{
		Token: "cx-alice", AOR: "sip:alice@example.com", Contact: "<sip:alice@192.0.2.10:5062>",
		Source: "192.0.2.10:5062", Transport: "UDP", CallID: "c1", Expires: time.Now().Add(time.Hour),
	}
	if err := g1.Put(ctx, b); err != nil {
		t.Fatalf("gateway 1: Put = %v, want nil", err)
	}
	if got, err := g2.ByToken(ctx, b.Token); err != nil || !sameBinding(got, b) {
		t.Errorf("gateway 2: ByToken = %+v, %v, want %+v, nil", got, err, b)
	}
	if got, err := g2.ByAOR(ctx, b.AOR); err != nil || len(got) != 1 || !sameBinding(got[0], b) {
		t.Errorf("gateway 2: ByAOR = %+v, %v, want [%+v], nil", got, err, b)
	}
	if n, err := g2.Len(ctx); err != nil || n != 1 {
		t.Errorf("gateway 2: Len = %d, %v, want 1, nil", n, err)
	}
	if got, err := other.ByToken(ctx, b.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("prefix other: ByToken = %+v, %v, want ErrNotFound", got, err)
	}
	if n, err := other.Len(ctx); err != nil || n != 0 {
		t.Errorf("prefix other: Len = %d, %v, want 0, nil", n, err)
	}
	// The phone unregisters through gateway 2.
	if err := g2.Delete(ctx, b.Token); err != nil {
		t.Fatalf("gateway 2: Delete = %v, want nil", err)
	}
	if got, err := g1.ByToken(ctx, b.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("gateway 1 after delete: ByToken = %+v, %v, want ErrNotFound", got, err)
	}
	if got, err := g1.ByAOR(ctx, b.AOR); err != nil || len(got) != 0 {
		t.Errorf("gateway 1 after delete: ByAOR = %+v, %v, want none", got, err)
	}
}

func TestRedisBindingsTwoGatewaysMiniredis(t *testing.T) {
	m, c1 := newMiniClient(t)
	c2 := redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1, ReadTimeout: time.Minute})
	t.Cleanup(func() { _ = c2.Close() })
	testTwoGateways(t, c1, c2)
}

// TestRedisBindingsTwoGatewaysReal is the point of the Redis store: a
// phone registered through gateway 1 is reachable from gateway 2.
func TestRedisBindingsTwoGatewaysReal(t *testing.T) {
	r := testenv.StartRedis(t)
	testTwoGateways(t, newRealClient(t, r), newRealClient(t, r))
}

// TestRedisBindingsRealTTL checks that Redis itself drops a binding's key
// at its Expires, with no sweep: the wait is Redis's expiry, polled
// against a deadline, not a timed assertion.
func TestRedisBindingsRealTTL(t *testing.T) {
	r := testenv.StartRedis(t)
	c := newRealClient(t, r)
	s := NewRedisBindings(c, "", 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := Binding{Token: "cx-short", AOR: "sip:alice@example.com", Expires: time.Now().Add(200 * time.Millisecond)}
	if err := s.Put(ctx, b); err != nil {
		t.Fatalf("Put = %v, want nil", err)
	}
	ttl, err := c.PTTL(ctx, "cusax:bind:cx-short").Result()
	if err != nil || ttl <= 0 || ttl > 200*time.Millisecond {
		t.Fatalf("PTTL(cusax:bind:cx-short) = %v, %v, want in (0, 200ms]", ttl, err)
	}
	for {
		n, err := c.Exists(ctx, "cusax:bind:cx-short", "cusax:aor:sip:alice@example.com").Result()
		if err != nil {
			t.Fatalf("EXISTS = %v", err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("keys still there after a minute")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n, err := s.Expire(ctx, time.Now()); err != nil || n != 1 {
		t.Errorf("Expire = %d, %v, want 1, nil", n, err)
	}
}

// TestRedisBindingsLayout pins the documented key layout.
func TestRedisBindingsLayout(t *testing.T) {
	m, c := newMiniClient(t)
	s := NewRedisBindings(c, "", 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	b := Binding{Token: "cx-1", AOR: "sip:alice@example.com", Contact: "<sip:alice@192.0.2.10>", Source: "192.0.2.10:5060", Transport: "UDP", CallID: "c", Expires: exp}
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get("cusax:bind:cx-1")
	want := fmt.Sprintf(`{"token":"cx-1","aor":"sip:alice@example.com","contact":"\u003csip:alice@192.0.2.10\u003e","source":"192.0.2.10:5060","transport":"UDP","call_id":"c","expires":%q}`, exp.UTC().Format(time.RFC3339Nano))
	if err != nil || got != want {
		t.Errorf("GET cusax:bind:cx-1 = %s, %v, want %s", got, err, want)
	}
	if ttl := m.TTL("cusax:bind:cx-1"); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL(cusax:bind:cx-1) = %v, want about 1h", ttl)
	}
	for _, key := range []string{"cusax:aor:sip:alice@example.com", "cusax:bindings"} {
		if score, err := m.ZScore(key, "cx-1"); err != nil || int64(score) != exp.UnixMilli() {
			t.Errorf("ZSCORE %s cx-1 = %v, %v, want %d", key, score, err, exp.UnixMilli())
		}
	}
	if ttl := m.TTL("cusax:aor:sip:alice@example.com"); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL(cusax:aor:…) = %v, want about 1h (its last member)", ttl)
	}
}

// TestRedisBindingsErrors checks that a failing Redis gives errors that
// name the package and the operation and not the server.
func TestRedisBindingsErrors(t *testing.T) {
	m, c := newMiniClient(t)
	s := NewRedisBindings(c, "", 0)
	m.Close()
	ctx := context.Background()
	b := Binding{Token: "cx-1", AOR: "sip:alice@example.com", Expires: time.Now().Add(time.Hour)}
	_, errGet := s.ByToken(ctx, "cx-1")
	_, errAOR := s.ByAOR(ctx, "sip:alice@example.com")
	_, errExpire := s.Expire(ctx, time.Now())
	_, errLen := s.Len(ctx)
	for name, err := range map[string]error{
		"Put": s.Put(ctx, b), "ByToken": errGet, "ByAOR": errAOR,
		"Delete": s.Delete(ctx, "cx-1"), "Expire": errExpire, "Len": errLen,
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "b2bua: redis ") || errors.Is(err, ErrNotFound) {
			t.Errorf("%s on a closed server = %v, want a \"b2bua: redis …\" error", name, err)
		}
	}
}

// TestRedisBindingsOpTimeout checks the deadline given to calls whose
// ctx has none, and that a caller's own deadline is kept.
func TestRedisBindingsOpTimeout(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
	}{{0, DefaultRedisBindingsOpTimeout}, {-1, DefaultRedisBindingsOpTimeout}, {2 * time.Second, 2 * time.Second}} {
		s := NewRedisBindings(nil, "", tc.in)
		ctx, cancel := s.opctx(context.Background())
		dl, ok := ctx.Deadline()
		cancel()
		if left := time.Until(dl); !ok || left > tc.want || left < tc.want-time.Second {
			t.Errorf("NewRedisBindings(opTimeout %v): deadline in %v (%v), want about %v", tc.in, left, ok, tc.want)
		}
	}
	s := NewRedisBindings(nil, "", 0)
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	ctx, done := s.opctx(parent)
	defer done()
	if dl, _ := ctx.Deadline(); time.Until(dl) < 59*time.Minute {
		t.Errorf("opctx(ctx with 1h deadline) deadline in %v, want the caller's", time.Until(dl))
	}
}
