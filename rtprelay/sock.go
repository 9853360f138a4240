package rtprelay

import (
	"net"
	"net/netip"
	"sync/atomic"

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
	floodLimit   int // packets per floodWindow; more are dropped
}

// learnState is what signalling tells a socket; replaced as a whole on each
// offer or answer (gen increments), read by the packet path.
type learnState struct {
	gen       uint64
	until     int64          // end of the learning window
	expect    netip.AddrPort // address from the SDP; invalid when unknown
	hold      bool           // c=0.0.0.0: send nothing to this side
	nsPerTick int64          // RTP clock period for jitter, 0 when unknown
}

// sockStats are a socket's counters, written by its packet path and read by
// Query.
type sockStats struct {
	packets, bytes         atomic.Uint64 // received from this side
	sentPackets, sentBytes atomic.Uint64 // sent to this side
	lost                   atomic.Int64  // RFC 3550 cumulative lost
	jitter                 atomic.Uint32 // RFC 3550 interarrival jitter, RTP timestamp units
	dropped                atomic.Uint64 // from a source other than the latched one, or unroutable
	flooded                atomic.Uint64 // over the flood limit
	lastRecv               atomic.Int64  // ns since the relay's epoch of the last accepted packet
}

// rtpState is the RTP receive state of one socket (RFC 3550 A.1, A.8).
type rtpState struct {
	init     bool
	ssrc     uint32
	maxSeq   uint16
	lost     int64
	haveTr   bool
	transit  uint32
	jitter16 uint32 // jitter * 16
}

const (
	maxDropout  = 3000
	maxMisorder = 100
)

// sock is one bound UDP socket of the relay, facing one side of a stream.
// Packets read from it leave through out towards out's peer.
type sock struct {
	conn   *net.UDPConn
	port   int
	callID string // for logs only
	fd     int32  // for engines that poll file descriptors
	worker any    // engine-owned
	out    *sock  // set before the engine starts serving the socket
	cnt    *counters
	lim    *limits

	peer    atomic.Pointer[netip.AddrPort] // where packets for this side go; nil: nowhere
	latched atomic.Bool
	learn   atomic.Pointer[learnState]
	st      sockStats

	// Owned by the packet path.
	seenGen    uint64
	prio       int8 // 0: nothing latched since the last signalling event
	from       netip.AddrPort
	lastFrom   int64
	floodStart int64
	floodCount int
	rtp        rtpState
}

func newSock(conn *net.UDPConn, port int, callID string, cnt *counters, lim *limits) *sock {
	s := &sock{conn: conn, port: port, callID: callID, cnt: cnt, lim: lim}
	s.learn.Store(&learnState{})
	return s
}

// expect is called by signalling: the SDP of this side now names ap (hold:
// c=0.0.0.0), and a learning window runs until until. A changed address
// replaces the destination at once; an unchanged one keeps what was latched.
func (s *sock) expect(ap netip.AddrPort, hold bool, until, nsPerTick int64) {
	old := s.learn.Load()
	s.learn.Store(&learnState{gen: old.gen + 1, until: until, expect: ap, hold: hold, nsPerTick: nsPerTick})
	switch {
	case hold:
		s.peer.Store(nil)
		s.latched.Store(false)
	case ap.IsValid() && (ap != old.expect || old.hold || s.peer.Load() == nil):
		s.peer.Store(&ap)
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
	s.cnt.inPkts.Inc()
	s.cnt.inBytes.Add(float64(len(p)))

	if now-s.floodStart >= s.lim.floodWindow {
		s.floodStart, s.floodCount = now, 0
	}
	s.floodCount++
	if s.floodCount > s.lim.floodLimit {
		s.st.flooded.Add(1)
		return nil, netip.AddrPort{}, false
	}

	ls := s.learn.Load()
	if ls.gen != s.seenGen {
		s.seenGen, s.prio = ls.gen, 0
	}
	if s.prio == 0 || src != s.from {
		pr := priority(src, ls.expect)
		switch {
		case s.prio == 0, now < ls.until && pr > s.prio, now-s.lastFrom > s.lim.relatchAfter:
			s.latch(src, pr, ls.hold)
		default:
			s.st.dropped.Add(1)
			return nil, netip.AddrPort{}, false
		}
	}
	s.lastFrom = now
	s.st.lastRecv.Store(now)
	s.analyse(p, now, ls.nsPerTick)

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
	s.from, s.prio = src, pr
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
	s.cnt.outPkts.Inc()
	s.cnt.outBytes.Add(float64(n))
}

// analyse updates loss and jitter from an RTP header; RTCP (RFC 5761
// payload types 64-95 after the marker bit), STUN, DTLS and anything else
// pass without analysis.
func (s *sock) analyse(p []byte, now, nsPerTick int64) {
	if len(p) < 12 || p[0]>>6 != 2 {
		return
	}
	if pt := p[1] & 0x7f; pt >= 64 && pt <= 95 {
		return
	}
	seq := uint16(p[2])<<8 | uint16(p[3])
	ts := uint32(p[4])<<24 | uint32(p[5])<<16 | uint32(p[6])<<8 | uint32(p[7])
	ssrc := uint32(p[8])<<24 | uint32(p[9])<<16 | uint32(p[10])<<8 | uint32(p[11])
	r := &s.rtp
	if !r.init || ssrc != r.ssrc { // new source or SSRC change: start over
		r.init, r.ssrc, r.maxSeq, r.haveTr = true, ssrc, seq, false
	} else {
		switch d := int16(seq - r.maxSeq); {
		case d > 0 && d < maxDropout:
			if d > 1 {
				r.lost += int64(d - 1)
				s.cnt.lost.Add(float64(d - 1))
				s.st.lost.Store(r.lost)
			}
			r.maxSeq = seq
		case d == 0: // duplicate
		case d < 0 && d > -maxMisorder:
			if r.lost > 0 { // a late packet fills a gap
				r.lost--
				s.st.lost.Store(r.lost)
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
		r.jitter16 += uint32(d) - (r.jitter16+8)>>4
		s.st.jitter.Store(r.jitter16 >> 4)
	}
	r.transit, r.haveTr = transit, true
}
