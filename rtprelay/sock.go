package rtprelay

import (
	"net"
	"net/netip"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the relay's Prometheus counters, resolved once so the packet
// path never looks up a label.
type counters struct {
	inPkts, inBytes, outPkts, outBytes, lost prometheus.Counter
}

func newCounters(m *Metrics) *counters {
	return &counters{
		inPkts: m.Packets.WithLabelValues("in"), inBytes: m.Bytes.WithLabelValues("in"),
		outPkts: m.Packets.WithLabelValues("out"), outBytes: m.Bytes.WithLabelValues("out"),
		lost: m.PacketsLost,
	}
}

// limits are the per-socket knobs of the packet path, in nanoseconds.
type limits struct {
	relatchAfter int64 // silence of the latched source after which another may latch
	floodWindow  int64
	floodLimit   int // packets per floodWindow; more are dropped (above 65,535: no limit)
}

// learnState is what signalling tells the two socks of an endpoint;
// replaced as a whole on each offer or answer (gen increments), read by the
// packet path. Never written once stored. 80 bytes (an allocation size
// class; one per endpoint and signalling event).
type learnState struct {
	// gen wraps after 65,536 signalling events: a sock then misses one
	// reset of its latch priority only if no packet arrived in between.
	gen       uint16
	hold      bool              // c=0.0.0.0: send nothing to this side
	nsPerTick int32             // RTP clock period for jitter (<= 1 s), 0 when unknown
	until     int64             // end of the learning window
	expect    [2]netip.AddrPort // RTP and RTCP addresses from the SDP; invalid when unknown
}

// sockStats are a socket's counters, written by its packet path and read by
// Query.
type sockStats struct {
	packets, bytes         atomic.Uint64 // received from this side
	sentPackets, sentBytes atomic.Uint64 // sent to this side
	// dropped and flooded are 32 bits (the sock then packs into 136
	// bytes); they wrap after 4.3 billion packets on one socket.
	dropped  atomic.Uint32 // from a source other than the latched one, or unroutable
	flooded  atomic.Uint32 // over the flood limit
	lastRecv atomic.Int64  // ns since the relay's epoch of the last accepted packet (also the packet path's)
}

// rtpState is the RTP receive state of one socket (RFC 3550 A.1, A.8),
// owned by its packet path; jitter16 is also read by Query.
type rtpState struct {
	init     bool
	haveTr   bool
	maxSeq   uint16
	ssrc     uint32
	transit  uint32
	jitter16 atomic.Uint32 // RFC 3550 interarrival jitter * 16, RTP timestamp units
}

const (
	maxDropout  = 3000
	maxMisorder = 100
)

// sock is one bound UDP socket of the relay, facing one side of a stream.
// Packets read from it leave through out towards out's peer. Two socks
// (RTP and RTCP) live inside an endpoint; their fields are ordered and
// sized for memory (four per call: an endpoint is 320 bytes). What only
// the RTP sock needs (loss, jitter) and what both share (the learn state)
// is in the endpoint.
type sock struct {
	// Read by the packet path, set before the engine starts serving.
	out  *sock
	env  *sockEnv
	conn *net.UDPConn // the goroutine engine's socket; nil with raw descriptors
	fd   int32        // the raw non-blocking socket (epoll engine), owned by the pool
	li   uint8        // 0: the endpoint's RTP sock, 1: its RTCP sock (learnState.expect index)
	prio int8         // owned by the packet path: 0: nothing latched since the last signalling event
	// fromPort and fromAddr (below) are the latched source, owned by the
	// packet path; split so that they pack.
	fromPort uint16
	ep       epollState // the epoll engine's part (engine_epoll_linux.go)

	peer    atomic.Pointer[netip.AddrPort] // where packets for this side go; nil: nowhere
	st      sockStats
	latched atomic.Bool

	// Owned by the packet path (and prio, fromPort above).
	floodCount uint16 // never above limits.floodLimit (wraps only when that is above 65,535: no limit)
	seenGen    uint16
	floodStart int64
	fromAddr   netip.Addr
}

// epollState is the epoll engine's part of a socket, kept in the sock (8
// bytes) so that serving a socket allocates nothing.
type epollState struct {
	dead atomic.Bool // stopped: nothing more is sent through the socket
	wi   uint8       // 1 + the index of the worker serving it (set by start); 0: none
	v6   bool        // an AF_INET6 socket
	// pooled: the descriptor belongs to the relay's pool, which gets the
	// sock back (sockEnv.detached) instead of the engine closing it.
	pooled   bool
	prepared bool // the engine serves sock.fd (prepare ran)
}

// logCallID is the Call-ID of s's call, for logs (s must be part of an
// endpoint, as every sock outside tests).
func (s *sock) logCallID() string {
	if c := s.endpoint().call; c != nil {
		return c.id
	}
	return ""
}

// endpoint returns the endpoint s is part of (its rtp or rtcp field, by li).
// Branch-free (the packet path calls it for every packet): rtcp directly
// follows rtp (TestEndpointSize).
func (s *sock) endpoint() *endpoint {
	off := unsafe.Offsetof(endpoint{}.rtp) + uintptr(s.li)*unsafe.Sizeof(sock{})
	return (*endpoint)(unsafe.Add(unsafe.Pointer(s), -int(off)))
}

// sockEnv is what every sock of a relay shares.
type sockEnv struct {
	cnt *counters
	lim limits
	v6  bool // raw descriptors are AF_INET6 sockets
	// detached is called by the engine once it no longer touches a
	// stopped sock (see engine.stop).
	detached func(*sock)
}

// noLearning is the learn state of a sock no signalling has described yet
// (never written).
var noLearning = &learnState{}

// initSock prepares the sock of ep for RTP (li 0: ep.rtp) or RTCP (li 1:
// ep.rtcp), bound to conn or fd.
func initSock(ep *endpoint, li uint8, env *sockEnv, conn *net.UDPConn, fd int32) *sock {
	s := &ep.rtp
	if li == 1 {
		s = &ep.rtcp
	}
	*s = sock{env: env, conn: conn, fd: fd, li: li}
	ep.learn.Store(noLearning)
	return s
}

// expect is called by signalling: the SDP of this side now names ap (hold:
// c=0.0.0.0), and a learning window runs until until. A changed address
// replaces the destination at once; an unchanged one keeps what was latched.
// (Tests; the relay tells both socks of an endpoint at once.)
func (s *sock) expect(ap netip.AddrPort, hold bool, until, nsPerTick int64) {
	e := s.endpoint()
	old := e.learn.Load()
	ls := &learnState{gen: old.gen + 1, until: until, hold: hold, nsPerTick: int32(nsPerTick), expect: old.expect}
	ls.expect[s.li] = ap
	e.learn.Store(ls)
	s.follow(ls, old)
}

// expect tells both socks of e what the SDP of their side says (see
// sock.expect); one allocation for both.
func (e *endpoint) expect(rtp, rtcp netip.AddrPort, hold bool, until, nsPerTick int64) {
	old := e.learn.Load()
	ls := &learnState{gen: old.gen + 1, until: until, hold: hold, nsPerTick: int32(nsPerTick), expect: [2]netip.AddrPort{rtp, rtcp}}
	e.learn.Store(ls)
	e.rtp.follow(ls, old)
	e.rtcp.follow(ls, old)
}

// follow updates s's destination for the learn state ls that replaced old
// (already stored in s's endpoint).
func (s *sock) follow(ls, old *learnState) {
	ap := &ls.expect[s.li] // the destination points into ls: no allocation of its own
	switch {
	case ls.hold:
		s.peer.Store(nil)
		s.latched.Store(false)
	case ap.IsValid() && (*ap != old.expect[s.li] || old.hold || s.peer.Load() == nil):
		s.peer.Store(ap)
		s.latched.Store(false)
	}
}

func priority(src, want netip.AddrPort) int8 {
	switch {
	case src == want:
		return 3
	case src.Addr() == want.Addr():
		return 2
	}
	return 1
}

// receive runs for every packet read from s at now (ns since the relay's
// epoch). It latches, counts and returns the socket and address the packet
// must be sent from and to; ok is false when it is dropped. It must not
// allocate except when it latches a new source.
func (s *sock) receive(p []byte, src netip.AddrPort, now int64) (out *sock, dst netip.AddrPort, ok bool) {
	s.st.packets.Add(1)
	s.st.bytes.Add(uint64(len(p)))
	env := s.env
	env.cnt.inPkts.Inc()
	env.cnt.inBytes.Add(float64(len(p)))

	if now-s.floodStart >= env.lim.floodWindow {
		s.floodStart, s.floodCount = now, 0
	}
	if int(s.floodCount) >= env.lim.floodLimit {
		s.st.flooded.Add(1)
		return nil, netip.AddrPort{}, false
	}
	s.floodCount++

	e := s.endpoint()
	ls := e.learn.Load()
	if ls.gen != s.seenGen {
		s.seenGen, s.prio = ls.gen, 0
	}
	if s.prio == 0 || src.Port() != s.fromPort || src.Addr() != s.fromAddr {
		pr := priority(src, ls.expect[s.li])
		switch {
		case s.prio == 0, now < ls.until && pr > s.prio, now-s.st.lastRecv.Load() > env.lim.relatchAfter:
			s.latch(src, pr, ls.hold)
		default:
			s.st.dropped.Add(1)
			return nil, netip.AddrPort{}, false
		}
	}
	s.st.lastRecv.Store(now)
	if s.li == 0 { // loss and jitter from the RTP socket only
		s.analyse(e, p, now, int64(ls.nsPerTick))
	}

	out = s.out
	if out == nil {
		return nil, netip.AddrPort{}, false
	}
	d := out.peer.Load()
	if d == nil {
		s.st.dropped.Add(1)
		return nil, netip.AddrPort{}, false
	}
	return out, *d, true
}

func (s *sock) latch(src netip.AddrPort, pr int8, hold bool) {
	s.fromAddr, s.fromPort, s.prio = src.Addr(), src.Port(), pr
	if hold {
		return
	}
	if cur := s.peer.Load(); cur == nil || *cur != src {
		s.peer.Store(&src)
	}
	s.latched.Store(true)
}

// sent counts a packet that left through s towards its peer.
func (s *sock) sent(n int) {
	s.st.sentPackets.Add(1)
	s.st.sentBytes.Add(uint64(n))
	s.env.cnt.outPkts.Inc()
	s.env.cnt.outBytes.Add(float64(n))
}

// analyse updates loss and jitter from an RTP header read by the RTP sock
// s; RTCP (RFC 5761 payload types 64-95 after the marker bit), STUN, DTLS
// and anything else pass without analysis.
// e is s's endpoint.
func (s *sock) analyse(e *endpoint, p []byte, now, nsPerTick int64) {
	if len(p) < 12 || p[0]>>6 != 2 {
		return
	}
	if pt := p[1] & 0x7f; pt >= 64 && pt <= 95 {
		return
	}
	seq := uint16(p[2])<<8 | uint16(p[3])
	ts := uint32(p[4])<<24 | uint32(p[5])<<16 | uint32(p[6])<<8 | uint32(p[7])
	ssrc := uint32(p[8])<<24 | uint32(p[9])<<16 | uint32(p[10])<<8 | uint32(p[11])
	r := &e.rtpIn
	if !r.init || ssrc != r.ssrc { // new source or SSRC change: start over
		r.init, r.ssrc, r.maxSeq, r.haveTr = true, ssrc, seq, false
	} else {
		switch d := int16(seq - r.maxSeq); {
		case d > 0 && d < maxDropout:
			if d > 1 {
				e.lost.Add(int32(d - 1))
				s.env.cnt.lost.Add(float64(d - 1))
			}
			r.maxSeq = seq
		case d == 0: // duplicate
		case d < 0 && d > -maxMisorder:
			if e.lost.Load() > 0 { // a late packet fills a gap
				e.lost.Add(-1)
			}
		default: // a jump: the sender restarted
			r.maxSeq, r.haveTr = seq, false
		}
	}
	if nsPerTick <= 0 {
		return
	}
	transit := uint32(now/nsPerTick) - ts
	if r.haveTr {
		d := int32(transit - r.transit)
		if d < 0 {
			d = -d
		}
		j := r.jitter16.Load()
		r.jitter16.Store(j + uint32(d) - (j+8)>>4)
	}
	r.transit, r.haveTr = transit, true
}
