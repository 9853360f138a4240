package rtprelay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pair is a bound even RTP / odd RTCP port pair.
type pair struct {
	port      int // the even RTP port; RTCP is port+1
	rtp, rtcp *net.UDPConn
	idx       int
}

type freePair struct {
	idx   int
	freed time.Time // zero: never used
}

// pool hands out even/odd port pairs of [min, max] in FIFO order from a
// random start, so a freed pair is reused only after every other free pair
// and never before its quarantine has passed. Pairs that fail to bind go to
// the back of the queue. Safe for concurrent use.
type pool struct {
	listen     netip.Addr
	min        int
	quarantine time.Duration
	inUse      prometheus.Gauge

	mu    sync.Mutex
	free  []freePair // ring buffer
	head  int
	count int
}

func newPool(listen netip.Addr, portMin, portMax int, quarantine time.Duration, inUse prometheus.Gauge) *pool {
	n := (portMax - portMin + 1) / 2
	p := &pool{listen: listen, min: portMin, quarantine: quarantine, inUse: inUse, free: make([]freePair, n), count: n}
	start := rand.IntN(n)
	for i := range n {
		p.free[i] = freePair{idx: (start + i) % n}
	}
	return p
}

// get binds and returns a free pair, or an error wrapping ErrNoPorts.
func (p *pool) get() (*pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	var lastErr error
	for tries := p.count; tries > 0; tries-- {
		f := p.free[p.head]
		if !f.freed.IsZero() && now.Sub(f.freed) < p.quarantine {
			break // everything behind it was freed later still
		}
		p.head = (p.head + 1) % len(p.free)
		p.count--
		port := p.min + 2*f.idx
		pr, err := p.bind(port)
		if err != nil {
			// Not quarantined anew (nothing of a call can arrive on a port
			// we never bound): back of the queue with its old time.
			lastErr = err
			p.pushLocked(f)
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) {
				break // out of descriptors: every other pair fails the same way
			}
			continue
		}
		pr.idx = f.idx
		p.inUse.Add(2)
		return pr, nil
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w (last bind error: %v)", ErrNoPorts, lastErr)
	}
	return nil, ErrNoPorts
}

func (p *pool) bind(port int) (*pair, error) {
	rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.listen, uint16(port))))
	if err != nil {
		return nil, err
	}
	rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.listen, uint16(port+1))))
	if err != nil {
		rtp.Close()
		return nil, err
	}
	return &pair{port: port, rtp: rtp, rtcp: rtcp}, nil
}

// put returns a pair whose sockets are closed; it is quarantined.
func (p *pool) put(pr *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushLocked(freePair{idx: pr.idx, freed: time.Now()})
	p.inUse.Sub(2)
}

func (p *pool) pushLocked(f freePair) {
	p.free[(p.head+p.count)%len(p.free)] = f
	p.count++
}
