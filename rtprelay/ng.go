package rtprelay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrNGTimeout means rtpengine did not answer an ng command within all
// tries.
var ErrNGTimeout = errors.New("rtprelay: ng: no reply")

// maxNGDatagram is the largest UDP payload over IPv4.
const maxNGDatagram = 65507

// NGError is an ng reply with "result": "error" (or another result that is
// not success); Reason is rtpengine's "error-reason".
type NGError struct {
	Command string
	Result  string
	Reason  string
}

func (e *NGError) Error() string {
	if e.Result != "error" {
		return fmt.Sprintf("rtprelay: rtpengine %s: result %q: %s", e.Command, e.Result, e.Reason)
	}
	return fmt.Sprintf("rtprelay: rtpengine %s: %s", e.Command, e.Reason)
}

// NGOptions configure an NGClient. The zero value is usable.
type NGOptions struct {
	// Timeout is how long one try waits for the reply; default 1s.
	Timeout time.Duration
	// Retries is how many times a request is sent again, with the same
	// cookie, after a try timed out; default 2, negative for none.
	// rtpengine caches replies by cookie, so a retransmitted offer is not
	// executed twice.
	Retries int
	// Cookie returns a new request cookie (no spaces, unique among the
	// requests in flight); default 16 random hex digits.
	Cookie func() string
}

// NGClient speaks rtpengine's ng control protocol (a cookie, a space and a
// bencoded dictionary per UDP datagram) to one rtpengine. Its methods are
// safe for concurrent use: requests share one socket, and a read goroutine,
// started by the first request and stopped by Close, hands each reply to
// the request with its cookie (stray and duplicate replies are dropped).
type NGClient struct {
	addr string
	opts NGOptions
	conn *net.UDPConn

	start sync.Once
	wg    sync.WaitGroup
	done  chan struct{} // closed by Close

	mu      sync.Mutex
	pending map[string]chan []byte
	closed  bool
	lastErr error // the last socket error of the read loop (e.g. connection refused)
}

// NewNGClient resolves addr (UDP host:port of rtpengine's --listen-ng) and
// opens the client's socket; no request is sent.
func NewNGClient(addr string, opts NGOptions) (*NGClient, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	switch {
	case opts.Retries == 0:
		opts.Retries = 2
	case opts.Retries < 0:
		opts.Retries = 0
	}
	if opts.Cookie == nil {
		opts.Cookie = randomCookie
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("rtprelay: ng address %q: %w", addr, err)
	}
	conn, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("rtprelay: ng %s: %w", addr, err)
	}
	return &NGClient{addr: addr, opts: opts, conn: conn, done: make(chan struct{}), pending: make(map[string]chan []byte)}, nil
}

func randomCookie() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close closes the socket, fails the requests in flight with ErrClosed and
// waits for the read goroutine.
func (c *NGClient) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	err := c.conn.Close()
	c.wg.Wait()
	return err
}

func (c *NGClient) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			c.mu.Lock()
			closed := c.closed
			c.lastErr = err
			c.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP port unreachable (ECONNREFUSED) and the like: the try times out
		}
		cookie, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok {
			continue
		}
		c.mu.Lock()
		c.lastErr = nil // rtpengine is there again
		ch := c.pending[string(cookie)]
		c.mu.Unlock()
		if ch == nil {
			continue // a late reply to a request that gave up, or a stray datagram
		}
		select {
		case ch <- bytes.Clone(body):
		default: // a duplicate reply to a retransmission
		}
	}
}

// Do sends the ng command req (a dictionary with at least "command") and
// returns the reply dictionary. It retransmits after each Timeout, up to
// Retries times, and gives up early when ctx ends. A reply whose "result"
// is not "ok" or "pong" is an *NGError.
func (c *NGClient) Do(ctx context.Context, req map[string]any) (map[string]any, error) {
	cmd, _ := req["command"].(string)
	if cmd == "" {
		return nil, errors.New(`rtprelay: ng: request without "command"`)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rtprelay: ng %s to %s: %w", cmd, c.addr, err)
	}
	body, err := bencodeAppend(nil, req)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	cookie := c.opts.Cookie()
	if _, dup := c.pending[cookie]; dup || cookie == "" || bytes.ContainsAny([]byte(cookie), " ") {
		c.mu.Unlock()
		return nil, fmt.Errorf("rtprelay: ng: cookie %q is empty, has a space or is in use", cookie)
	}
	c.pending[cookie] = ch
	c.start.Do(func() { c.wg.Go(c.readLoop) }) // under mu: never after Close's Wait
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, cookie)
		c.mu.Unlock()
	}()

	msg := make([]byte, 0, len(cookie)+1+len(body))
	msg = append(append(append(msg, cookie...), ' '), body...)
	if len(msg) > maxNGDatagram {
		return nil, fmt.Errorf("rtprelay: ng %s: request of %d bytes does not fit a UDP datagram", cmd, len(msg))
	}
	t := time.NewTimer(c.opts.Timeout)
	defer t.Stop()
	for try := 0; ; try++ {
		if _, err := c.conn.Write(msg); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, ErrClosed
			}
			// ECONNREFUSED from an earlier try's ICMP: count it as a lost try.
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
		}
		t.Reset(c.opts.Timeout)
		select {
		case reply := <-ch:
			return decodeNGReply(cmd, reply)
		case <-ctx.Done():
			return nil, fmt.Errorf("rtprelay: ng %s to %s: %w", cmd, c.addr, ctx.Err())
		case <-c.done:
			return nil, ErrClosed
		case <-t.C:
		}
		c.mu.Lock()
		lastErr := c.lastErr
		c.mu.Unlock()
		if try >= c.opts.Retries {
			if lastErr != nil {
				return nil, fmt.Errorf("%w to %s %s after %d tries of %v (last socket error: %v)", ErrNGTimeout, cmd, c.addr, try+1, c.opts.Timeout, lastErr)
			}
			return nil, fmt.Errorf("%w to %s %s after %d tries of %v", ErrNGTimeout, cmd, c.addr, try+1, c.opts.Timeout)
		}
	}
}

func decodeNGReply(cmd string, reply []byte) (map[string]any, error) {
	v, err := bdecode(reply)
	if err != nil {
		return nil, fmt.Errorf("rtprelay: ng %s reply: %w", cmd, err)
	}
	d, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("rtprelay: ng %s reply is a %T, not a dictionary", cmd, v)
	}
	switch res, _ := d["result"].(string); res {
	case "ok", "pong":
		return d, nil
	default:
		reason, _ := d["error-reason"].(string)
		if reason == "" {
			reason = "no error-reason"
		}
		return d, &NGError{Command: cmd, Result: res, Reason: reason}
	}
}

// NGOption changes an ng request before it is sent, e.g.
// NGSet("record call", "yes") or NGFlag("strict source").
type NGOption func(req map[string]any)

// NGSet sets key to value (string, []byte, int, []string, []any or
// map[string]any) in the request, replacing the default.
func NGSet(key string, value any) NGOption {
	return func(req map[string]any) { req[key] = value }
}

// NGDel removes key from the request (e.g. one of the defaults).
func NGDel(key string) NGOption {
	return func(req map[string]any) { delete(req, key) }
}

// NGFlag appends flag to the request's "flags" list.
func NGFlag(flag string) NGOption {
	return func(req map[string]any) {
		fl, _ := req["flags"].([]string)
		req["flags"] = append(fl, flag)
	}
}

// NGOfferRequest builds the "offer" dictionary that Offer sends: rtpengine
// rewrites the o= line and the session c= line ("replace": origin,
// session-connection), removes ICE ("ICE": "remove", as our relay does),
// keeps the transport protocol (RTP/AVP, RTP/SAVP, UDP/TLS/... untouched)
// and records nothing. opts change it.
func NGOfferRequest(callID, fromTag string, sdp []byte, opts ...NGOption) map[string]any {
	req := map[string]any{
		"command":     "offer",
		"call-id":     callID,
		"from-tag":    fromTag,
		"sdp":         sdp,
		"replace":     []string{"origin", "session-connection"},
		"ICE":         "remove",
		"record call": "no",
	}
	for _, o := range opts {
		o(req)
	}
	return req
}

// NGAnswerRequest builds the "answer" dictionary that Answer sends, with
// the same defaults as NGOfferRequest.
func NGAnswerRequest(callID, fromTag, toTag string, sdp []byte, opts ...NGOption) map[string]any {
	req := NGOfferRequest(callID, fromTag, sdp, opts...)
	req["command"] = "answer"
	req["to-tag"] = toTag
	return req
}

// Ping sends "ping" and expects "pong".
func (c *NGClient) Ping(ctx context.Context) error {
	d, err := c.Do(ctx, map[string]any{"command": "ping"})
	if err != nil {
		return err
	}
	if d["result"] != "pong" {
		return fmt.Errorf("rtprelay: ng ping to %s: result %v, want pong", c.addr, d["result"])
	}
	return nil
}

// Offer sends the SDP offer of the leg with fromTag and returns rtpengine's
// SDP for the other leg.
func (c *NGClient) Offer(ctx context.Context, callID, fromTag string, sdp []byte, opts ...NGOption) ([]byte, error) {
	return c.sdpCommand(ctx, NGOfferRequest(callID, fromTag, sdp, opts...))
}

// Answer sends the SDP answer of the leg with toTag to the offer made by
// fromTag and returns rtpengine's SDP for the offerer.
func (c *NGClient) Answer(ctx context.Context, callID, fromTag, toTag string, sdp []byte, opts ...NGOption) ([]byte, error) {
	return c.sdpCommand(ctx, NGAnswerRequest(callID, fromTag, toTag, sdp, opts...))
}

func (c *NGClient) sdpCommand(ctx context.Context, req map[string]any) ([]byte, error) {
	d, err := c.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	sdp, ok := d["sdp"].(string)
	if !ok {
		return nil, fmt.Errorf("rtprelay: ng %s reply without sdp", req["command"])
	}
	return []byte(sdp), nil
}

// Delete ends the call at once ("delete delay": 0); with fromTag "" the
// whole call, else the call as seen from that tag (rtpengine then deletes
// the dialogue of that tag).
func (c *NGClient) Delete(ctx context.Context, callID, fromTag string, opts ...NGOption) error {
	req := map[string]any{"command": "delete", "call-id": callID, "delete delay": 0}
	if fromTag != "" {
		req["from-tag"] = fromTag
	}
	for _, o := range opts {
		o(req)
	}
	_, err := c.Do(ctx, req)
	return err
}

// Query returns rtpengine's "query" reply for the call: "created",
// "last signal", "totals" and per tag "tags" → "medias" → "streams" with
// "local port", "endpoint" and "stats" ({packets, bytes, errors}).
func (c *NGClient) Query(ctx context.Context, callID string) (map[string]any, error) {
	return c.Do(ctx, map[string]any{"command": "query", "call-id": callID})
}

// Statistics returns rtpengine's "statistics" reply (current sessions,
// totals, control commands).
func (c *NGClient) Statistics(ctx context.Context) (map[string]any, error) {
	return c.Do(ctx, map[string]any{"command": "statistics"})
}
