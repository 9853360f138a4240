package rtprelay

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// endpoint is the relay's RTP/RTCP socket pair facing one side of a
// stream: one allocation for both socks, 320 bytes.
type endpoint struct {
	pair    *pair
	call    *call        // for logs only (its id; once here, not in each sock)
	pending atomic.Int32 // stopped socks the engine has not let go of yet
	lost    atomic.Int32 // RFC 3550 cumulative lost (a 24-bit field there), from rtp
	rtpIn   rtpState     // of what rtp receives; owned by its packet path
	// learn is what the last signalling event said of this side, for both
	// socks (replaced, never written: the packet path reads it unlocked).
	learn     atomic.Pointer[learnState]
	rtp, rtcp sock
}

// stream is one m-line of a call, anchored by two endpoints; 32 bytes.
type stream struct {
	kind *string      // internKind
	ends [2]*endpoint // ends[i] faces legs[i]; nil: not anchored
	flow [2]flow      // what the last SDP of legs[i] said of this m-line
}

// flow is what one side's SDP says of a stream, for the hold state.
type flow uint8

const (
	flowUnknown flow = iota // no SDP of this side yet
	flowNone                // declined, on hold or not sendrecv
	flowBoth                // media expected both ways (mediaInfo.active)
)

// leg is one side of a call, identified by its SIP tag.
type leg struct {
	tag     string
	sessID  uint64
	sessVer uint64
	outSum  uint64 // hash of the last SDP sent to this leg, o= line excluded; 0: none yet
}

type call struct {
	id string

	mu         sync.Mutex
	deleted    bool
	answered   bool
	hold       bool
	timedOut   bool
	offerer    uint8  // side of the latest offer (packed with the flags: 144 bytes, not 160)
	legs       [2]leg // legs[0] made the first offer
	streams    []*stream
	lastSignal int64
}

// Offer anchors an offer made by the leg with fromTag: it allocates the
// sockets of new streams, opens a learning window for the offerer and
// returns the SDP to send to the other leg. On an existing call it is a
// re-offer (re-INVITE, UPDATE) from either leg. Errors wrap ErrBadSDP,
// ErrNoPorts or ErrClosed; after one, the call is as it was before.
func (r *Relay) Offer(ctx context.Context, callID, fromTag string, sdp []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := r.getSDP()
	defer r.putSDP(p)
	if err := p.parse(sdp); err != nil {
		return nil, err
	}
	c, created, err := r.callFor(callID, fromTag)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return nil, fmt.Errorf("%w: call %q deleted", ErrNotFound, callID)
	}
	side := 0
	if !created && c.legs[1].tag == fromTag && fromTag != c.legs[0].tag {
		side = 1
	} else if !created && c.legs[0].tag != fromTag && !c.answered {
		c.legs[0].tag = fromTag // a new offer before any answer replaces the offerer's tag
	}
	out, err := r.apply(c, side, p, true)
	if err != nil {
		if created {
			c.deleted = true
			r.mu.Lock()
			delete(r.calls, callID)
			r.mu.Unlock()
			r.m.Sessions.Dec()
		}
		return nil, err
	}
	c.offerer = uint8(side)
	return out, nil
}

// Answer anchors the answer of the leg with toTag to the call's latest
// offer and returns the SDP to send to the offerer. The answer arms the
// media timeout. Errors wrap ErrNotFound or ErrBadSDP.
func (r *Relay) Answer(ctx context.Context, callID, toTag string, sdp []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := r.getSDP()
	defer r.putSDP(p)
	if err := p.parse(sdp); err != nil {
		return nil, err
	}
	r.mu.Lock()
	c := r.calls[callID]
	r.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return nil, fmt.Errorf("%w: call %q deleted", ErrNotFound, callID)
	}
	side := 1 - int(c.offerer)
	if len(p.media) > len(c.streams) {
		return nil, fmt.Errorf("%w: answer has %d m-lines, the offer %d", ErrBadSDP, len(p.media), len(c.streams))
	}
	out, err := r.apply(c, side, p, false)
	if err != nil {
		return nil, err
	}
	c.legs[side].tag = toTag // forking: the last answer wins
	c.answered = true
	return out, nil
}

// getSDP returns a zeroed parsedSDP for one Offer or Answer; putSDP takes
// it back (the parse is garbage the moment the rewrite is done).
func (r *Relay) getSDP() *parsedSDP {
	if p, ok := r.sdps.Get().(*parsedSDP); ok {
		return p
	}
	return new(parsedSDP)
}

func (r *Relay) putSDP(p *parsedSDP) {
	*p = parsedSDP{} // lets go of the caller's SDP
	r.sdps.Put(p)
}

// callFor returns the call, creating it with fromTag as its first leg.
func (r *Relay) callFor(callID, fromTag string) (c *call, created bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false, ErrClosed
	}
	if c = r.calls[callID]; c != nil {
		return c, false, nil
	}
	c = &call{id: callID}
	c.legs[0] = leg{tag: fromTag, sessID: newSessID()}
	c.legs[1] = leg{sessID: newSessID()}
	r.calls[callID] = c
	r.m.Sessions.Inc()
	return c, true, nil
}

func newSessID() uint64 { return rand.Uint64N(1<<62) + 1 }

// apply takes the SDP p of legs[side] into call c (c.mu held) and renders
// the SDP for the other leg. Sockets allocated here are released again when
// it fails.
func (r *Relay) apply(c *call, side int, p *parsedSDP, offer bool) ([]byte, error) {
	other := 1 - side
	var fresh []*endpoint
	fail := func(err error) ([]byte, error) {
		for _, e := range fresh {
			for _, st := range c.streams {
				for i := range st.ends {
					if st.ends[i] == e {
						st.ends[i] = nil
					}
				}
			}
			r.release(e, false)
		}
		return nil, err
	}
	oldStreams := len(c.streams)
	plan := rewritePlan{addr: r.cfg.Advertise, media: make([]mediaPlan, len(p.media))}
	type setting struct {
		e  *endpoint
		mi *mediaInfo
	}
	var settings []setting
	var declined []*stream
	for i := range p.media {
		mi := &p.media[i]
		if i == len(c.streams) {
			c.streams = append(c.streams, &stream{kind: internKind(mi.kind)})
		}
		st := c.streams[i]
		if !mi.anchored || (!offer && st.ends[side] == nil) {
			if !mi.anchored {
				declined = append(declined, st)
			}
			continue
		}
		for _, s := range []int{side, other} {
			if st.ends[s] == nil {
				e, err := r.newEndpoint(c)
				if err != nil {
					c.streams = c.streams[:oldStreams]
					return fail(err)
				}
				fresh = append(fresh, e)
				st.ends[s] = e
			}
		}
		plan.media[i] = mediaPlan{rtp: st.ends[other].pair.port, rtcp: st.ends[other].pair.port + 1}
		settings = append(settings, setting{st.ends[side], mi})
	}
	l := &c.legs[other]
	plan.sessID, plan.sessVer = l.sessID, l.sessVer
	out, err := p.rewrite(&plan)
	if err != nil {
		c.streams = c.streams[:oldStreams]
		return fail(err)
	}
	if sum := maphash.Bytes(r.seed, withoutOrigin(out)) | 1; sum != l.outSum {
		if l.outSum != 0 {
			l.sessVer++
			out = setOrigin(out, l.sessID, l.sessVer, r.cfg.Advertise)
		}
		l.outSum = sum
	}

	// Committed: wire up new endpoints, tell sockets what to expect.
	now := r.now()
	until := now + int64(r.cfg.LearnWindow)
	for i := range p.media {
		f := flowNone
		if p.media[i].active() {
			f = flowBoth
		}
		c.streams[i].flow[side] = f
	}
	for _, st := range declined {
		for s := range st.ends {
			if st.ends[s] != nil {
				r.release(st.ends[s], true)
				st.ends[s] = nil
			}
		}
	}
	for _, st := range c.streams {
		if st.ends[0] != nil && st.ends[1] != nil && st.ends[0].rtp.out == nil {
			st.ends[0].rtp.out, st.ends[1].rtp.out = &st.ends[1].rtp, &st.ends[0].rtp
			st.ends[0].rtcp.out, st.ends[1].rtcp.out = &st.ends[1].rtcp, &st.ends[0].rtcp
		}
	}
	for _, s := range settings {
		mi := s.mi
		var nsPerTick int64
		if mi.clock > 0 {
			nsPerTick = int64(time.Second) / int64(mi.clock)
		}
		var rtp, rtcp netip.AddrPort
		if mi.addr.IsValid() && !mi.hold {
			rtp = netip.AddrPortFrom(mi.addr, uint16(mi.port))
			ra, rp := mi.addr, mi.port+1
			if mi.rtcpPort != 0 {
				rp = mi.rtcpPort
			}
			if mi.rtcpAddr.IsValid() {
				ra = mi.rtcpAddr
			}
			rtcp = netip.AddrPortFrom(ra, uint16(rp))
		}
		s.e.expect(rtp, rtcp, mi.hold, until, nsPerTick)
	}
	for _, e := range fresh {
		if e.rtp.out == nil { // its partner was not allocated: cannot happen, but never serve a half stream
			continue
		}
		r.eng.start(&e.rtp)
		r.eng.start(&e.rtcp)
	}
	c.hold = true
	for _, st := range c.streams {
		if st.flow[0] == flowBoth && st.flow[1] == flowBoth {
			c.hold = false
		}
	}
	c.lastSignal, c.timedOut = now, false
	return out, nil
}

// withoutOrigin returns sdp without its second line (o=, which we render
// as line two).
func withoutOrigin(sdp []byte) []byte {
	_, rest, ok := bytes.Cut(sdp, []byte("\no="))
	if !ok {
		return sdp
	}
	_, rest, _ = bytes.Cut(rest, []byte("\n"))
	return rest
}

// setOrigin replaces the o= line (line two) of sdp.
func setOrigin(sdp []byte, id, ver uint64, adv netip.Addr) []byte {
	head, rest, ok := bytes.Cut(sdp, []byte("\no="))
	if !ok {
		return sdp
	}
	_, rest, _ = bytes.Cut(rest, []byte("\n"))
	out := append(bytes.Clone(head), "\no=- "...)
	out = strconv.AppendUint(out, id, 10)
	out = append(out, ' ')
	out = strconv.AppendUint(out, ver, 10)
	out = append(out, " "+connString(adv)+"\r\n"...)
	return append(out, rest...)
}

func (r *Relay) newEndpoint(c *call) (*endpoint, error) {
	pr, err := r.pool.get()
	if err != nil {
		return nil, err
	}
	e := &endpoint{pair: pr, call: c}
	initSock(e, 0, &r.env, pr.rtp, pr.rtpFD)
	initSock(e, 1, &r.env, pr.rtcp, pr.rtcpFD)
	return e, nil
}

// detachingEngine is an engine that calls sockEnv.detached for every sock
// it was asked to stop, once it no longer reads from or sends through the
// sock's descriptor (maybe later, from another goroutine). Its pool keeps
// raw sockets bound through their quarantine and reuses them.
type detachingEngine interface {
	engine
	detaches()
}

// release stops an endpoint's socks. Its ports go back to the pool once
// the engine has let go of both (detached), or at once when the engine
// does not detach (it closes the sockets as it stops them).
func (r *Relay) release(e *endpoint, started bool) {
	if !started {
		if e.rtp.conn != nil {
			e.rtp.conn.Close()
			e.rtcp.conn.Close()
		}
		r.pool.put(e.pair)
		return
	}
	if _, ok := r.eng.(detachingEngine); !ok {
		r.eng.stop(&e.rtp)
		r.eng.stop(&e.rtcp)
		r.pool.put(e.pair)
		return
	}
	e.pending.Store(2)
	r.eng.stop(&e.rtp)
	r.eng.stop(&e.rtcp)
}

// detached is the engines' callback for a stopped sock they no longer
// touch (sockEnv.detached).
func (r *Relay) detached(s *sock) {
	if e := s.endpoint(); e.pending.Add(-1) == 0 {
		r.pool.put(e.pair)
	}
}

// Delete ends a call: its sockets close and its ports go to quarantine.
func (r *Relay) Delete(callID string) error {
	r.mu.Lock()
	c := r.calls[callID]
	delete(r.calls, callID)
	r.mu.Unlock()
	if c == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	r.drop(c)
	return nil
}

// drop frees a call already removed from r.calls.
func (r *Relay) drop(c *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return
	}
	c.deleted = true
	for _, st := range c.streams {
		for i, e := range st.ends {
			if e != nil {
				r.release(e, e.rtp.out != nil)
				st.ends[i] = nil
			}
		}
	}
	r.m.Sessions.Dec()
}

// Stats are a call's media statistics, by leg.
type Stats struct {
	CallID   string
	OnHold   bool // no stream flows both ways; HoldTimeout applies
	Answered bool
	Legs     [2]LegStats // Legs[0] made the first offer
}

// LegStats are one leg's streams, in m-line order.
type LegStats struct {
	Tag     string
	Streams []StreamStats
}

// StreamStats count one stream of one leg: what the relay received from the
// leg (Packets, Bytes, Lost, Jitter; RTP and RTCP together, loss and
// jitter from RTP only) and what it sent to it.
type StreamStats struct {
	Media     string         // audio, video, ...
	LocalPort int            // the relay's RTP port facing this leg; 0: not anchored
	Peer      netip.AddrPort // where RTP for this leg goes: the latched source, else the SDP address
	Latched   bool           // Peer was learnt from received packets

	Packets, Bytes         uint64
	SentPackets, SentBytes uint64
	Lost                   int64         // RFC 3550 cumulative number of packets lost
	Jitter                 time.Duration // RFC 3550 interarrival jitter
	Dropped                uint64        // from unexpected sources, or with nowhere to go
	Flooded                uint64        // over the flood limit
	LastPacket             time.Duration // time since the last accepted packet; -1: none yet
}

// Query returns the statistics of a call.
func (r *Relay) Query(callID string) (Stats, error) {
	r.mu.Lock()
	c := r.calls[callID]
	r.mu.Unlock()
	if c == nil {
		return Stats{}, fmt.Errorf("%w: %q", ErrNotFound, callID)
	}
	now := r.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{CallID: callID, OnHold: c.hold, Answered: c.answered}
	for side := range c.legs {
		ls := &s.Legs[side]
		ls.Tag = c.legs[side].tag
		for _, st := range c.streams {
			ss := StreamStats{Media: *st.kind, LastPacket: -1}
			if e := st.ends[side]; e != nil {
				ss.LocalPort = e.pair.port
				if p := e.rtp.peer.Load(); p != nil {
					ss.Peer = *p
				}
				ss.Latched = e.rtp.latched.Load()
				last := int64(-1)
				for _, k := range []*sock{&e.rtp, &e.rtcp} {
					ss.Packets += k.st.packets.Load()
					ss.Bytes += k.st.bytes.Load()
					ss.SentPackets += k.st.sentPackets.Load()
					ss.SentBytes += k.st.sentBytes.Load()
					ss.Dropped += uint64(k.st.dropped.Load())
					ss.Flooded += uint64(k.st.flooded.Load())
					if k.st.packets.Load() > 0 {
						last = max(last, k.st.lastRecv.Load())
					}
				}
				ss.Lost = int64(e.lost.Load())
				if ls := e.learn.Load(); ls.nsPerTick > 0 {
					ss.Jitter = time.Duration(int64(e.rtpIn.jitter16.Load()>>4) * int64(ls.nsPerTick))
				}
				if last >= 0 {
					ss.LastPacket = time.Duration(now - last)
				}
			}
			ls.Streams = append(ls.Streams, ss)
		}
	}
	return s, nil
}

// checkTimeouts calls OnTimeout for every answered call whose media has been
// silent for Timeout (HoldTimeout on hold) since its last packet or
// signalling event.
func (r *Relay) checkTimeouts() {
	r.mu.Lock()
	calls := make([]*call, 0, len(r.calls))
	for _, c := range r.calls {
		calls = append(calls, c)
	}
	r.mu.Unlock()
	now := r.now()
	for _, c := range calls {
		if r.silent(c, now) {
			r.log.Info("media timeout", "call_id", c.id)
			if r.cfg.OnTimeout != nil {
				r.cfg.OnTimeout(c.id)
			}
		}
	}
}

// silent reports, once per silence, whether c's media timed out.
func (r *Relay) silent(c *call, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted || !c.answered || c.timedOut {
		return false
	}
	limit := r.cfg.Timeout
	if c.hold {
		if limit = r.cfg.HoldTimeout; limit == 0 {
			return false
		}
	}
	last := c.lastSignal
	for _, st := range c.streams {
		for _, e := range st.ends {
			if e != nil {
				last = max(last, e.rtp.st.lastRecv.Load(), e.rtcp.st.lastRecv.Load())
			}
		}
	}
	if now-last < int64(limit) {
		return false
	}
	c.timedOut = true
	return true
}

// mediaKinds are the common media kinds (internKind).
var mediaKinds = [...]string{"audio", "video", "image", "text", "application", "message"}

// internKind returns a pointer to a shared string for the common media
// kinds (a stream then keeps 8 bytes and nothing of the parsed SDP), to a
// copy for others.
func internKind(k string) *string {
	for i := range mediaKinds {
		if k == mediaKinds[i] {
			return &mediaKinds[i]
		}
	}
	k = strings.Clone(k)
	return &k
}
