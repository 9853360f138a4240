package lease

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type runner struct {
	l      *Lease
	m      *Metrics
	cancel context.CancelFunc
	done   chan error
	in     chan struct{} // one value per run of f
}

func startLease(t *testing.T, client redis.UniversalClient, owner string) *runner {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	l, err := New(Config{Client: client, Key: "cusax:lease:xmpp:c", Owner: owner,
		TTL: 400 * time.Millisecond, Renew: 100 * time.Millisecond, Retry: 20 * time.Millisecond}, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{l: l, m: m, cancel: cancel, done: make(chan error, 1), in: make(chan struct{}, 16)}
	go func() {
		r.done <- l.Run(ctx, func(ctx context.Context) error {
			r.in <- struct{}{}
			<-ctx.Done()
			return nil
		})
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *runner) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func waitHeld(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOneHolderAndHandover(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()

	a := startLease(t, client, "a")
	waitHeld(t, "a holds", a.l.Held)
	<-a.in
	b := startLease(t, client, "b")
	// b polls while a renews: b never runs f.
	for range 5 {
		mr.FastForward(100 * time.Millisecond) // a renews within every TTL
		waitHeld(t, "a renewed", func() bool { return mr.TTL("cusax:lease:xmpp:c") > 300*time.Millisecond })
	}
	if b.l.Held() || len(b.in) != 0 {
		t.Fatal("b holds the lease while a renews it")
	}
	if got := testutil.ToFloat64(a.m.Held) + testutil.ToFloat64(b.m.Held); got != 1 {
		t.Errorf("sum of cusax_xmpp_lease_held = %v, want 1", got)
	}

	// a stops cleanly: it releases, b takes over at its next poll.
	a.stop()
	waitHeld(t, "b takes over after a released", b.l.Held)
	<-b.in
	if v, _ := mr.Get("cusax:lease:xmpp:c"); v != "b" {
		t.Errorf("lease key = %q, want b", v)
	}
	if testutil.ToFloat64(a.m.Held) != 0 || testutil.ToFloat64(b.m.Held) != 1 {
		t.Errorf("held gauges a=%v b=%v, want 0 and 1", testutil.ToFloat64(a.m.Held), testutil.ToFloat64(b.m.Held))
	}
}

func TestStepsDownWhenAnotherOwnsTheKey(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	a := startLease(t, client, "a")
	<-a.in
	// The key expired while a was partitioned away and someone else took
	// it: a's next renewal finds the other owner and stops f.
	mr.Set("cusax:lease:xmpp:c", "z")
	mr.SetTTL("cusax:lease:xmpp:c", 400*time.Millisecond)
	waitHeld(t, "a steps down", func() bool { return !a.l.Held() })
	// z's lease expires (it died): a takes it again.
	mr.FastForward(time.Second)
	waitHeld(t, "a holds again", a.l.Held)
	<-a.in
	if got := testutil.ToFloat64(a.m.Acquired); got != 2 {
		t.Errorf("cusax_xmpp_lease_acquired_total = %v, want 2", got)
	}
}

func TestKeepsHoldingWhileRedisIsDown(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer client.Close()
	a := startLease(t, client, "a")
	<-a.in
	mr.SetError("LOADING down")
	waitHeld(t, "renewal errors counted", func() bool { return testutil.ToFloat64(a.m.Errors) >= 2 })
	if !a.l.Held() || len(a.in) != 0 {
		t.Fatal("a gave the component up while Redis was unreachable")
	}
	mr.SetError("")
	// Redis came back empty: the renewal re-creates a's key.
	mr.FlushAll()
	waitHeld(t, "key re-created", func() bool { v, _ := mr.Get("cusax:lease:xmpp:c"); return v == "a" })
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("New without client = nil error")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := New(Config{Client: c, Key: "k", TTL: time.Second, Renew: 2 * time.Second}, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("New with renew > TTL = nil error")
	}
}

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	probs, err := testutil.GatherAndLint(reg)
	if err != nil || len(probs) > 0 {
		t.Errorf("GatherAndLint = %v %v", probs, err)
	}
}
