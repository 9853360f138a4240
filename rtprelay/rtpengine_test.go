package rtprelay

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRtpengineTags checks the tags each ng request carries through offers,
// answers and re-offers from either leg.
func TestRtpengineTags(t *testing.T) {
	var mu sync.Mutex
	var reqs []map[string]any
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		mu.Lock()
		reqs = append(reqs, r.d)
		mu.Unlock()
		if r.d["call-id"] == "fails" {
			return map[string]any{"result": "error", "error-reason": "Ran out of ports"}
		}
		return ok("sdp", "v=0\r\n")
	})
	ng := newTestNGClient(t, f.addr(), NGOptions{})
	m := NewMetrics(prometheus.NewRegistry())
	r := NewRtpengine(ng, slog.New(slog.DiscardHandler), m, NGFlag("strict source"))
	ctx := context.Background()
	sdp := []byte("v=0\r\n")
	steps := []struct {
		do            func() error
		cmd, from, to string
	}{
		{func() error { _, err := r.Offer(ctx, "c", "A", sdp); return err }, "offer", "A", ""},
		{func() error { _, err := r.Offer(ctx, "c", "A2", sdp); return err }, "offer", "A2", ""}, // new offer before an answer
		{func() error { _, err := r.Answer(ctx, "c", "B1", sdp); return err }, "answer", "A2", "B1"},
		{func() error { _, err := r.Answer(ctx, "c", "B", sdp); return err }, "answer", "A2", "B"}, // forking: the last answer wins
		{func() error { _, err := r.Offer(ctx, "c", "B", sdp); return err }, "offer", "B", "A2"},   // re-INVITE from the callee
		{func() error { _, err := r.Answer(ctx, "c", "A2", sdp); return err }, "answer", "B", "A2"},
		{func() error { _, err := r.Offer(ctx, "c", "A2", sdp); return err }, "offer", "A2", "B"},
		{func() error { _, err := r.Answer(ctx, "c", "B", sdp); return err }, "answer", "A2", "B"},
		{func() error { return r.Delete("c") }, "delete", "", ""},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d (%s) = %v", i, s.cmd, err)
		}
		mu.Lock()
		d := reqs[len(reqs)-1]
		mu.Unlock()
		from, _ := d["from-tag"].(string)
		to, _ := d["to-tag"].(string)
		if d["command"] != s.cmd || d["call-id"] != "c" || from != s.from || to != s.to {
			t.Errorf("step %d: sent %s from-tag %q to-tag %q, want %s %q %q", i, d["command"], from, to, s.cmd, s.from, s.to)
		}
		if s.cmd != "delete" && (d["ICE"] != "remove" || !equalAny(d["flags"], "strict source")) {
			t.Errorf("step %d: %v lacks the defaults or the backend's options", i, d)
		}
		if s.cmd == "delete" && d["delete delay"] != int64(0) {
			t.Errorf("delete = %v, want delete delay 0", d)
		}
		want := 1.0
		if s.cmd == "delete" {
			want = 0
		}
		if got := testutil.ToFloat64(m.Sessions); got != want {
			t.Errorf("step %d: cusax_rtp_sessions_active = %v, want %v", i, got, want)
		}
	}
	if _, err := r.Offer(ctx, "fails", "A", sdp); !errors.Is(err, ErrNoPorts) {
		t.Errorf("Offer with rtpengine out of ports = %v, want ErrNoPorts", err)
	}
	if _, err := r.Answer(ctx, "fails", "B", sdp); !errors.Is(err, ErrNotFound) {
		t.Errorf("Answer after a failed first offer = %v, want ErrNotFound", err)
	}
	if err := r.Delete("fails"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete after a failed first offer = %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 0 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 0", got)
	}
	if _, err := r.Query("c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query after Delete = %v, want ErrNotFound", err)
	}
}

func equalAny(v any, want ...string) bool {
	l, ok := v.([]any)
	if !ok || len(l) != len(want) {
		return false
	}
	for i := range l {
		if l[i] != want[i] {
			return false
		}
	}
	return true
}

// TestRtpengineDeleteTimeout: when rtpengine does not answer, Delete
// reports it but the call is forgotten anyway.
func TestRtpengineDeleteTimeout(t *testing.T) {
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		if r.d["command"] == "delete" {
			return nil
		}
		return ok("sdp", "v=0\r\n")
	})
	ng := newTestNGClient(t, f.addr(), NGOptions{Timeout: 10 * time.Millisecond, Retries: -1})
	m := NewMetrics(prometheus.NewRegistry())
	r := NewRtpengine(ng, slog.New(slog.DiscardHandler), m)
	if _, err := r.Offer(context.Background(), "c", "A", []byte("v=0\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete("c"); !errors.Is(err, ErrNGTimeout) {
		t.Errorf("Delete = %v, want ErrNGTimeout", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 0 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 0", got)
	}
}

// queryReply is rtpengine 10.5's query reply after 20 packets each way
// (trimmed), with Alice's side on hold (sendonly) when hold is set.
func queryReply(hold bool) map[string]any {
	stream := func(port, peer int64, rtcp bool, packets int64) any {
		kind := "RTP"
		if rtcp {
			kind = "RTCP"
		}
		return map[string]any{
			"local port": port, "flags": []any{kind, "filled"}, "last packet": int64(1795683188),
			"endpoint": map[string]any{"address": "127.0.0.1", "family": "IPv4", "port": peer},
			"stats":    map[string]any{"packets": packets, "bytes": packets * 172, "errors": int64(1)},
		}
	}
	aliceFlags := []any{"initialized", "send", "recv"}
	if hold {
		aliceFlags = []any{"initialized", "send"}
	}
	return map[string]any{
		"result": "ok",
		"tags": map[string]any{
			"tag-alice": map[string]any{"medias": []any{map[string]any{"type": "audio", "flags": aliceFlags,
				"streams": []any{stream(23168, 59365, false, 20), stream(23169, 59366, true, 2)}}}},
			"tag-bob": map[string]any{"medias": []any{map[string]any{"type": "audio", "flags": []any{"initialized", "send", "recv"},
				"streams": []any{stream(23148, 44123, false, 19), stream(23149, 44124, true, 0)}}}},
		},
	}
}

func TestStatsFromQuery(t *testing.T) {
	now := time.Unix(1795683190, 0)
	s := statsFromQuery("c", queryReply(false), [2]string{"tag-alice", "tag-bob"}, true, now)
	a, b := s.Legs[0], s.Legs[1]
	if s.CallID != "c" || !s.Answered || s.OnHold || a.Tag != "tag-alice" || b.Tag != "tag-bob" || len(a.Streams) != 1 || len(b.Streams) != 1 {
		t.Fatalf("statsFromQuery = %+v", s)
	}
	want := StreamStats{
		Media: "audio", LocalPort: 23168, Peer: netip.MustParseAddrPort("127.0.0.1:59365"),
		Packets: 22, Bytes: 22 * 172, SentPackets: 19, SentBytes: 19 * 172, Dropped: 2, LastPacket: 2 * time.Second,
	}
	if a.Streams[0] != want {
		t.Errorf("Legs[0].Streams[0] = %+v, want %+v", a.Streams[0], want)
	}
	if b.Streams[0].LocalPort != 23148 || b.Streams[0].Packets != 19 || b.Streams[0].SentPackets != 22 {
		t.Errorf("Legs[1].Streams[0] = %+v", b.Streams[0])
	}
	if s := statsFromQuery("c", queryReply(true), [2]string{"tag-alice", "tag-bob"}, true, now); !s.OnHold {
		t.Errorf("statsFromQuery(sendonly) = not on hold")
	}
	// Unanswered: no second tag yet; missing pieces never panic.
	s = statsFromQuery("c", queryReply(false), [2]string{"tag-alice", ""}, false, now)
	if len(s.Legs[1].Streams) != 0 || s.OnHold || s.Legs[0].Streams[0].SentPackets != 0 {
		t.Errorf("statsFromQuery(unanswered) = %+v", s)
	}
	for _, q := range []map[string]any{{}, {"tags": "x"}, {"tags": map[string]any{"tag-alice": map[string]any{"medias": []any{"x", map[string]any{"streams": []any{1}}}}}}} {
		statsFromQuery("c", q, [2]string{"tag-alice", "tag-bob"}, true, now)
	}
}

func TestRtpengineWatch(t *testing.T) {
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		if r.d["command"] == "query" && r.d["call-id"] == "gone" {
			return map[string]any{"result": "error", "error-reason": "Unknown call-id"}
		}
		return ok("sdp", "v=0\r\n")
	})
	ng := newTestNGClient(t, f.addr(), NGOptions{})
	m := NewMetrics(prometheus.NewRegistry())
	r := NewRtpengine(ng, slog.New(slog.DiscardHandler), m)
	ctx, cancel := context.WithCancel(context.Background())
	for _, id := range []string{"alive", "gone"} {
		if _, err := r.Offer(ctx, id, "A", []byte("v=0\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Watch(ctx, 0, nil); err == nil {
		t.Errorf("Watch(interval 0) = nil, want an error")
	}
	gone := make(chan string, 10)
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, 5*time.Millisecond, func(id string) { gone <- id }) }()
	if id := <-gone; id != "gone" {
		t.Errorf("onGone(%q), want gone", id)
	}
	// Wait for one more full sweep: "gone" must not be reported twice.
	for before := f.queries("alive"); f.queries("alive") < before+2; {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch = %v, want nil", err)
	}
	close(gone)
	for id := range gone {
		t.Errorf("onGone(%q) again", id)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 1 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 1", got)
	}
	if _, err := r.Answer(context.Background(), "gone", "B", []byte("v=0\r\n")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Answer(gone) = %v, want ErrNotFound", err)
	}
}
