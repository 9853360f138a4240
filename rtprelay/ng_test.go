package rtprelay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNG is an ng server on a loopback UDP socket: handle runs on its read
// goroutine for every request and returns the reply dictionary, or nil to
// stay silent (it may also send replies itself with send).
type fakeNG struct {
	conn   *net.UDPConn
	handle func(f *fakeNG, r ngReq) map[string]any
	wg     sync.WaitGroup

	mu      sync.Mutex
	queried map[string]int // query requests by call-id
}

// queries returns how many query requests for callID arrived.
func (f *fakeNG) queries(callID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queried[callID]
}

type ngReq struct {
	cookie string
	raw    []byte // the whole datagram
	d      map[string]any
	from   *net.UDPAddr
	n      int // requests received so far, this one included
}

func newFakeNG(t *testing.T, handle func(f *fakeNG, r ngReq) map[string]any) *fakeNG {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNG{conn: conn, handle: handle, queried: make(map[string]int)}
	f.wg.Go(func() {
		buf := make([]byte, 65536)
		for n := 1; ; n++ {
			k, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			cookie, body, _ := bytes.Cut(buf[:k], []byte(" "))
			v, err := bdecode(body)
			if err != nil {
				t.Errorf("fake ng: request %q: %v", buf[:k], err)
				continue
			}
			d, _ := v.(map[string]any)
			r := ngReq{cookie: string(cookie), raw: bytes.Clone(buf[:k]), d: d, from: from, n: n}
			if d["command"] == "query" {
				f.mu.Lock()
				id, _ := d["call-id"].(string)
				f.queried[id]++
				f.mu.Unlock()
			}
			if reply := f.handle(f, r); reply != nil {
				f.send(from, r.cookie, reply)
			}
		}
	})
	t.Cleanup(func() { conn.Close(); f.wg.Wait() })
	return f
}

func (f *fakeNG) send(to *net.UDPAddr, cookie string, d map[string]any) {
	b, err := bencodeAppend([]byte(cookie+" "), d)
	if err != nil {
		panic(err)
	}
	f.conn.WriteToUDP(b, to)
}

func (f *fakeNG) addr() string { return f.conn.LocalAddr().String() }

func newTestNGClient(t *testing.T, addr string, opts NGOptions) *NGClient {
	t.Helper()
	c, err := NewNGClient(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ok(extra ...any) map[string]any {
	d := map[string]any{"result": "ok"}
	for i := 0; i+1 < len(extra); i += 2 {
		d[extra[i].(string)] = extra[i+1]
	}
	return d
}

func TestNGPingWireFormat(t *testing.T) {
	raw := make(chan []byte, 1)
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		raw <- r.raw
		return map[string]any{"result": "pong"}
	})
	c := newTestNGClient(t, f.addr(), NGOptions{Cookie: func() string { return "c00k1e" }})
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping = %v", err)
	}
	if got, want := <-raw, "c00k1e d7:command4:pinge"; string(got) != want {
		t.Errorf("ping datagram = %q, want %q", got, want)
	}
}

func TestNGOfferRequest(t *testing.T) {
	req := NGOfferRequest("cid", "ft", []byte("v=0\r\n"), NGFlag("strict source"), NGSet("record call", "yes"), NGDel("ICE"))
	b, err := bencodeAppend(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	want := "d7:call-id3:cid7:command5:offer5:flagsl13:strict sourcee8:from-tag2:ft11:record call3:yes" +
		"7:replacel6:origin18:session-connectione3:sdp5:v=0\r\ne"
	if string(b) != want {
		t.Errorf("offer = %q, want %q", b, want)
	}
	a := NGAnswerRequest("cid", "ft", "tt", nil)
	if a["command"] != "answer" || a["to-tag"] != "tt" || a["from-tag"] != "ft" || a["ICE"] != "remove" {
		t.Errorf("answer = %v", a)
	}
}

func TestNGCookieMatching(t *testing.T) {
	f := newFakeNG(t, func(f *fakeNG, r ngReq) map[string]any {
		f.conn.WriteToUDP([]byte("no-space-at-all"), r.from)
		f.send(r.from, r.cookie+"x", ok("who", "stray"))
		f.send(r.from, "other", ok("who", "stray"))
		f.send(r.from, r.cookie, ok("who", "me"))
		f.send(r.from, r.cookie, ok("who", "duplicate"))
		return nil
	})
	c := newTestNGClient(t, f.addr(), NGOptions{})
	for range 3 {
		d, err := c.Do(context.Background(), map[string]any{"command": "query", "call-id": "x"})
		if err != nil || d["who"] != "me" {
			t.Fatalf("Do = %v, %v, want the reply with our cookie", d, err)
		}
	}
}

func TestNGRetransmission(t *testing.T) {
	var tries []ngReq
	var mu sync.Mutex
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		tries = append(tries, r)
		if len(tries) < 3 {
			return nil // lost
		}
		return ok("sdp", "v=0\r\n")
	})
	c := newTestNGClient(t, f.addr(), NGOptions{Timeout: 50 * time.Millisecond, Retries: 2})
	out, err := c.Offer(context.Background(), "cid", "ft", []byte("v=0\r\n"))
	if err != nil || string(out) != "v=0\r\n" {
		t.Fatalf("Offer = %q, %v", out, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tries) != 3 {
		t.Fatalf("server saw %d tries, want 3", len(tries))
	}
	for _, r := range tries[1:] {
		if !bytes.Equal(r.raw, tries[0].raw) {
			t.Errorf("retransmission %q differs from %q (same cookie and body expected)", r.raw, tries[0].raw)
		}
	}
}

func TestNGTimeout(t *testing.T) {
	var n atomic.Int32
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any { n.Add(1); return nil })
	for _, tt := range []struct{ retries, tries int32 }{{-1, 1}, {1, 2}} {
		c := newTestNGClient(t, f.addr(), NGOptions{Timeout: 20 * time.Millisecond, Retries: int(tt.retries)})
		n.Store(0)
		err := c.Ping(context.Background())
		if !errors.Is(err, ErrNGTimeout) || !strings.Contains(err.Error(), fmt.Sprintf("after %d tries", tt.tries)) {
			t.Errorf("Ping with Retries %d = %v, want ErrNGTimeout after %d tries", tt.retries, err, tt.tries)
		}
		c.Close()
		if got := n.Load(); got != tt.tries {
			t.Errorf("server saw %d tries, want %d", got, tt.tries)
		}
	}
}

func TestNGTimeoutNobodyListening(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	c := newTestNGClient(t, addr, NGOptions{Timeout: 20 * time.Millisecond, Retries: 1})
	if err := c.Ping(context.Background()); !errors.Is(err, ErrNGTimeout) {
		t.Errorf("Ping to a closed port = %v, want ErrNGTimeout", err)
	}
}

func TestNGContext(t *testing.T) {
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any { return nil })
	c := newTestNGClient(t, f.addr(), NGOptions{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Ping(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Ping(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func TestNGErrorReply(t *testing.T) {
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any {
		switch r.d["call-id"] {
		case "unknown":
			return map[string]any{"result": "error", "error-reason": "Unknown call-id"}
		case "sdp":
			return map[string]any{"result": "error", "error-reason": "Failed to parse SDP"}
		case "load":
			return map[string]any{"result": "load limit", "message": "x"}
		case "list":
			return map[string]any{"result": []any{}}
		default:
			return nil
		}
	})
	c := newTestNGClient(t, f.addr(), NGOptions{Timeout: 50 * time.Millisecond, Retries: -1})
	ctx := context.Background()
	_, err := c.Query(ctx, "unknown")
	var ne *NGError
	if !errors.As(err, &ne) || ne.Reason != "Unknown call-id" || ne.Command != "query" {
		t.Fatalf("Query(unknown) = %v, want an *NGError with the error-reason", err)
	}
	if err.Error() != "rtprelay: rtpengine query: Unknown call-id" {
		t.Errorf("error text = %q", err)
	}
	if got := mapNGError(err); !errors.Is(got, ErrNotFound) || !errors.As(got, &ne) {
		t.Errorf("mapNGError(%v) = %v, want ErrNotFound keeping the NGError", err, got)
	}
	_, err = c.Offer(ctx, "sdp", "ft", []byte("x"))
	if got := mapNGError(err); !errors.Is(got, ErrBadSDP) {
		t.Errorf("mapNGError(%v) = %v, want ErrBadSDP", err, got)
	}
	_, err = c.Offer(ctx, "load", "ft", []byte("x"))
	if !errors.As(err, &ne) || ne.Result != "load limit" {
		t.Errorf("Offer(load) = %v, want an *NGError with result %q", err, "load limit")
	}
	_, err = c.Offer(ctx, "list", "ft", []byte("x"))
	if err == nil {
		t.Errorf("Offer(result is a list) = nil, want an error")
	}
	if _, err := c.Do(ctx, map[string]any{"call-id": "x"}); err == nil {
		t.Errorf("Do(no command) = nil, want an error")
	}
}

func TestNGMalformedReply(t *testing.T) {
	f := newFakeNG(t, func(f *fakeNG, r ngReq) map[string]any {
		f.conn.WriteToUDP([]byte(r.cookie+" d6:result"), r.from)
		return nil
	})
	c := newTestNGClient(t, f.addr(), NGOptions{})
	if err := c.Ping(context.Background()); !errors.Is(err, errBencode) {
		t.Errorf("Ping with a truncated reply = %v, want errBencode", err)
	}
}

// TestNGConcurrent answers 50 requests in reverse order of arrival: each
// caller must get its own reply.
func TestNGConcurrent(t *testing.T) {
	const n = 50
	var held []ngReq
	f := newFakeNG(t, func(f *fakeNG, r ngReq) map[string]any {
		held = append(held, r)
		if len(held) == n {
			for i := len(held) - 1; i >= 0; i-- {
				f.send(held[i].from, held[i].cookie, ok("echo", held[i].d["call-id"]))
			}
		}
		return nil
	})
	c := newTestNGClient(t, f.addr(), NGOptions{Timeout: 5 * time.Second})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprint("call-", i)
			d, err := c.Query(context.Background(), id)
			if err != nil || d["echo"] != id {
				t.Errorf("Query(%s) = %v, %v", id, d, err)
			}
		})
	}
	wg.Wait()
}

func TestNGClose(t *testing.T) {
	f := newFakeNG(t, func(_ *fakeNG, r ngReq) map[string]any { return nil })
	c, err := NewNGClient(f.addr(), NGOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Ping(context.Background()) }()
	for { // wait until the request is in flight
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Ping during Close = %v, want ErrClosed", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestNGBadCookie(t *testing.T) {
	c := newTestNGClient(t, "127.0.0.1:9", NGOptions{Cookie: func() string { return "a b" }})
	if err := c.Ping(context.Background()); err == nil {
		t.Errorf("Ping with cookie %q = nil, want an error", "a b")
	}
	if _, err := NewNGClient("no-port", NGOptions{}); err == nil {
		t.Errorf("NewNGClient(no-port) = nil error")
	}
}

func TestNGTooLarge(t *testing.T) {
	c := newTestNGClient(t, "127.0.0.1:9", NGOptions{})
	_, err := c.Offer(context.Background(), "c", "A", make([]byte, maxNGDatagram))
	if err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("Offer(64 KiB SDP) = %v, want a size error", err)
	}
}
