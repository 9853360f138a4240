package rtprelay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Rtpengine is the Media backend that hands media to an rtpengine daemon
// (rtp.backend: rtpengine) through an NGClient. It remembers, per Call-ID,
// the tags of both legs and which leg made the latest offer (rtpengine's
// answer names the offerer's tag as from-tag), and whether the call was
// answered. Its methods are safe for concurrent use; signalling of one
// call is serialised.
//
// rtpengine ends a call whose media stopped by itself (its --timeout,
// 60 s by default; --silent-timeout on hold); rtpengine's timeouts replace
// the relay's Timeout and OnTimeout. The b2bua learns of it from Watch, or
// when Query returns ErrNotFound (the call is then forgotten here too).
// Its sessions gauge counts the calls known here.
type Rtpengine struct {
	ng   *NGClient
	log  *slog.Logger
	m    *Metrics
	opts []NGOption

	mu    sync.Mutex
	calls map[string]*engineCall
}

type engineCall struct {
	live     atomic.Bool // rtpengine has it: the first offer succeeded
	mu       sync.Mutex  // held across the ng request of an offer or answer
	gone     bool        // deleted or never created
	tags     [2]string   // tags[0] made the first offer
	offerer  int         // side of the latest offer
	answered bool
}

// NewRtpengine returns a Media backend sending ng commands through ng, which
// the caller closes after the last call. opts are added to every offer and
// answer (after the defaults of NGOfferRequest). m may be shared with a
// Relay's metrics; only its Sessions gauge is used.
func NewRtpengine(ng *NGClient, log *slog.Logger, m *Metrics, opts ...NGOption) *Rtpengine {
	return &Rtpengine{ng: ng, log: log, m: m, opts: opts, calls: make(map[string]*engineCall)}
}

// mapNGError turns rtpengine's error reasons into the package's sentinels
// (keeping the NGError in the chain).
func mapNGError(err error) error {
	var ne *NGError
	if !errors.As(err, &ne) {
		return err
	}
	r := strings.ToLower(ne.Reason)
	switch {
	case strings.Contains(r, "unknown call-id"), strings.Contains(r, "call-id not found"),
		strings.Contains(r, "unknown from-tag"), strings.Contains(r, "unknown to-tag"):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case strings.Contains(r, "sdp"):
		return fmt.Errorf("%w: %w", ErrBadSDP, err)
	case strings.Contains(r, "ports"):
		return fmt.Errorf("%w: %w", ErrNoPorts, err)
	}
	return err
}

// Offer sends the offer of the leg with fromTag to rtpengine. On an
// existing call it is a re-offer; rtpengine then also gets the other leg's
// tag as to-tag. A failed first offer leaves no call behind.
func (e *Rtpengine) Offer(ctx context.Context, callID, fromTag string, sdp []byte) ([]byte, error) {
	e.mu.Lock()
	c, created := e.calls[callID], false
	if c == nil {
		c, created = &engineCall{tags: [2]string{fromTag, ""}}, true
		e.calls[callID] = c
	}
	e.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil, fmt.Errorf("%w: call %q deleted", ErrNotFound, callID)
	}
	side := 0
	if !created && c.tags[1] != "" && c.tags[1] == fromTag && fromTag != c.tags[0] {
		side = 1
	}
	opts := e.opts
	if other := c.tags[1-side]; c.answered && other != "" {
		opts = append(slices.Clip(opts), NGSet("to-tag", other))
	}
	out, err := e.ng.Offer(ctx, callID, fromTag, sdp, opts...)
	if err != nil {
		if created {
			c.gone = true
			e.mu.Lock()
			delete(e.calls, callID)
			e.mu.Unlock()
		}
		return nil, mapNGError(err)
	}
	if created {
		c.live.Store(true)
		if e.m != nil {
			e.m.Sessions.Inc()
		}
	}
	if side == 0 && !c.answered {
		c.tags[0] = fromTag // a new offer before any answer replaces the offerer's tag
	}
	c.offerer = side
	return out, nil
}

// Answer sends the answer of the leg with toTag to the latest offer.
func (e *Rtpengine) Answer(ctx context.Context, callID, toTag string, sdp []byte) ([]byte, error) {
	c := e.call(callID)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return nil, fmt.Errorf("%w: call %q deleted", ErrNotFound, callID)
	}
	out, err := e.ng.Answer(ctx, callID, c.tags[c.offerer], toTag, sdp, e.opts...)
	if err != nil {
		return nil, mapNGError(err)
	}
	c.tags[1-c.offerer] = toTag // forking: the last answer wins
	c.answered = true
	return out, nil
}

func (e *Rtpengine) call(callID string) *engineCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[callID]
}

// forget removes the call; it reports whether it was there.
func (e *Rtpengine) forget(callID string) bool {
	e.mu.Lock()
	c := e.calls[callID]
	delete(e.calls, callID)
	e.mu.Unlock()
	if c == nil {
		return false
	}
	c.mu.Lock()
	gone := c.gone
	c.gone = true
	c.mu.Unlock()
	if !gone && e.m != nil {
		e.m.Sessions.Dec()
	}
	return true
}

// Delete forgets the call and deletes it at rtpengine at once (both legs).
// ErrNotFound when the call is not known here. When rtpengine does not
// answer, the call is forgotten anyway and rtpengine's media timeout ends
// it there.
func (e *Rtpengine) Delete(callID string) error {
	if !e.forget(callID) {
		return fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	err := e.ng.Delete(context.Background(), callID, "")
	if err != nil && errors.Is(mapNGError(err), ErrNotFound) {
		return nil // rtpengine had already ended it (media timeout)
	}
	return err
}

// Query asks rtpengine for the call's statistics and maps them onto Stats:
// per leg and m-line, the RTP port rtpengine uses facing the leg, the
// leg's address, packets and bytes received from it (RTP and RTCP), errors
// as Dropped, time since its last packet (1 s resolution). rtpengine 10.5
// reports no per-stream sent counters: SentPackets and SentBytes are what
// it received from the other leg. Lost, Jitter and Flooded stay 0. When
// rtpengine no longer knows the call (it timed out there), the call is
// forgotten and the error wraps ErrNotFound.
func (e *Rtpengine) Query(callID string) (Stats, error) {
	c := e.call(callID)
	if c == nil {
		return Stats{}, fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	q, err := e.ng.Query(context.Background(), callID)
	if err != nil {
		err = mapNGError(err)
		if errors.Is(err, ErrNotFound) {
			e.forget(callID)
		}
		return Stats{}, err
	}
	c.mu.Lock()
	tags, answered := c.tags, c.answered
	c.mu.Unlock()
	return statsFromQuery(callID, q, tags, answered, time.Now()), nil
}

func statsFromQuery(callID string, q map[string]any, tags [2]string, answered bool, now time.Time) Stats {
	s := Stats{CallID: callID, Answered: answered}
	tagMap, _ := q["tags"].(map[string]any)
	var medias [2][]any
	for side, tag := range tags {
		s.Legs[side].Tag = tag
		if t, ok := tagMap[tag].(map[string]any); ok && tag != "" {
			medias[side], _ = t["medias"].([]any)
		}
		for _, mv := range medias[side] {
			m, _ := mv.(map[string]any)
			ss := StreamStats{LastPacket: -1}
			ss.Media, _ = m["type"].(string)
			var last int64
			streams, _ := m["streams"].([]any)
			rtp := -1 // the RTP stream: flagged RTP, else the first
			for i, sv := range streams {
				st, _ := sv.(map[string]any)
				if fl := strList(st["flags"]); rtp < 0 && slices.Contains(fl, "RTP") && !slices.Contains(fl, "RTCP") {
					rtp = i
				}
			}
			for i, sv := range streams {
				st, _ := sv.(map[string]any)
				if i == max(rtp, 0) {
					ss.LocalPort = int(intOf(st["local port"]))
					ss.Peer = addrPortOf(st["endpoint"])
					ss.Latched = slices.Contains(strList(st["flags"]), "confirmed")
				}
				stats, _ := st["stats"].(map[string]any)
				ss.Packets += uint64(max(intOf(stats["packets"]), 0))
				ss.Bytes += uint64(max(intOf(stats["bytes"]), 0))
				ss.Dropped += uint64(max(intOf(stats["errors"]), 0))
				last = max(last, intOf(st["last packet"]))
			}
			if ss.Packets > 0 && last > 0 {
				ss.LastPacket = max(now.Sub(time.Unix(last, 0)), 0)
			}
			s.Legs[side].Streams = append(s.Legs[side].Streams, ss)
		}
	}
	flowing := false
	for i := range s.Legs[0].Streams {
		if i < len(s.Legs[1].Streams) {
			a, b := &s.Legs[0].Streams[i], &s.Legs[1].Streams[i]
			a.SentPackets, a.SentBytes = b.Packets, b.Bytes
			b.SentPackets, b.SentBytes = a.Packets, a.Bytes
			if sendRecv(medias[0][i]) && sendRecv(medias[1][i]) {
				flowing = true
			}
		}
	}
	s.OnHold = answered && !flowing
	return s
}

func sendRecv(media any) bool {
	m, _ := media.(map[string]any)
	fl := strList(m["flags"])
	return slices.Contains(fl, "send") && slices.Contains(fl, "recv")
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func intOf(v any) int64 {
	n, _ := v.(int64)
	return n
}

func addrPortOf(v any) netip.AddrPort {
	d, _ := v.(map[string]any)
	s, _ := d["address"].(string)
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, uint16(intOf(d["port"])))
}

// Watch polls rtpengine until ctx ends, then returns nil: every interval
// it queries, one request at a time, each call known here, and for each
// call rtpengine no longer has (it ended it after its --timeout, or it
// restarted) it forgets the call and calls onGone(callID). onGone runs on
// Watch's goroutine and must not block; the b2bua hangs up both legs (its
// Delete then returns ErrNotFound). A sweep stops at the first request
// without reply (rtpengine down) and is retried at the next tick.
func (e *Rtpengine) Watch(ctx context.Context, interval time.Duration, onGone func(callID string)) error {
	if interval <= 0 {
		return errors.New("rtprelay: rtpengine watch interval must be positive")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.sweep(ctx, onGone)
		}
	}
}

func (e *Rtpengine) sweep(ctx context.Context, onGone func(callID string)) {
	e.mu.Lock()
	ids := make([]string, 0, len(e.calls))
	for id, c := range e.calls {
		if c.live.Load() {
			ids = append(ids, id)
		}
	}
	e.mu.Unlock()
	for _, id := range ids {
		_, err := e.ng.Query(ctx, id)
		switch {
		case err == nil:
		case errors.Is(mapNGError(err), ErrNotFound):
			if e.forget(id) {
				e.log.Info("media ended by rtpengine", "call_id", id)
				if onGone != nil {
					onGone(id)
				}
			}
		case errors.Is(err, ErrNGTimeout):
			e.log.Warn("rtpengine watch", "err", err)
			return
		case ctx.Err() != nil, errors.Is(err, ErrClosed):
			return
		default:
			e.log.Warn("rtpengine watch", "call_id", id, "err", err)
		}
	}
}
