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

// pair is an even RTP / odd RTCP port pair of the range. The pool owns its
// sockets: bound while a call holds the pair and, with raw descriptors,
// while it sits in quarantine.
type pair struct {
	port int // the even RTP port; RTCP is port+1
	idx  int

	// Raw non-blocking sockets (raw pools); -1 when not bound.
	rtpFD, rtcpFD int32
	// The goroutine engine's sockets (conn pools).
	rtp, rtcp *net.UDPConn
	// wi[0] and wi[1] are 1 + the index of the epoll worker whose set
	// holds rtpFD and rtcpFD (0: none). The engine sets them when it
	// first serves a descriptor; a stopped pooled socket stays in its
	// worker's set, so a warm pair reused goes back to the same worker
	// without epoll_ctl (epollEngine.start). unbindLocked resets them:
	// closing a descriptor takes it out of every epoll set.
	wi [2]uint8

	freed time.Time // zero: never used
}

// pool hands out even/odd port pairs of [min, max], safe for concurrent use.
//
// Unbound ("cold") pairs are handed out in FIFO order from a random start,
// so a freed pair is reused only after every other free pair and never
// before its quarantine has passed; pairs that fail to bind go to the back
// of the queue.
//
// A raw pool (the epoll engine) keeps the sockets of a freed pair bound
// ("warm") and hands such a pair out again, before any cold pair, once it
// has proved silent for the warm quarantine (rtp.quarantine_silent, at most
// the quarantine): binding four sockets was the most expensive part of a
// call's setup. Nothing reads a warm pair's sockets, so datagrams sent to it
// queue in the kernel. Run's sweep drains a warm pair once in the middle of
// its warm quarantine (one ppoll for all the pairs due, then a drain of
// those with something queued: the old call's packets still in flight); get
// hands it out only when nothing arrived in between (one ppoll of its two
// sockets; anything queued before that was discarded, so a late packet of
// the previous call can never reach the next one). A pair that did receive
// is closed (its old peer is still sending; the kernel now answers it with
// port-unreachable) and quarantined again, cold, for the whole quarantine:
// a closed socket cannot tell silence. Warm pairs nobody asked for are
// closed by the sweep one quarantine after their warm quarantine ended, so
// a finished peak does not keep descriptors open.
//
// Warm sockets only use descriptors calls do not need: the pool keeps at
// most fdBudget descriptors bound (three quarters of the open-file limit,
// fdBudget()), counting the pairs calls hold. A freed pair past it is
// closed; a call that needs a cold pair while the pool is at its budget
// (or when binding runs out of descriptors) first closes the most
// recently freed warm pair, the one furthest from reuse. At high call
// rates the warm quarantine holds more pairs than the process may keep
// open (4 descriptors per call x calls/s x warm quarantine), so the budget
// decides how many calls skip binding: warm pairs / warm quarantine per
// second.
type pool struct {
	listen     netip.Addr
	min        int
	quarantine time.Duration // of a pair that was closed
	warmQ      time.Duration // of a pair that stayed bound (<= quarantine)
	inUse      prometheus.Gauge
	// Pairs handed out warm, bound anew, refused (cusax_rtp_port_pairs_total).
	reused, bound, refused prometheus.Counter
	raw                    bool
	fdBudget               int // most descriptors kept bound, held pairs included (fdBudget())

	mu    sync.Mutex
	pairs []pair
	busy  int // pairs handed out and not yet put back
	cold  ring
	warm  ring
	// warm[0:checked] were drained in the middle of their warm quarantine.
	checked int
	closed  bool
	// sweep's reused lists of the descriptors it drains.
	sweepFDs []int32
	scratch  drainScratch
}

// ring is a FIFO of pair indexes.
type ring struct {
	buf         []int32
	head, count int
}

func (r *ring) push(i int) {
	r.buf[(r.head+r.count)%len(r.buf)] = int32(i)
	r.count++
}

func (r *ring) at(n int) int { return int(r.buf[(r.head+n)%len(r.buf)]) }

func (r *ring) pop() int {
	i := r.buf[r.head]
	r.head = (r.head + 1) % len(r.buf)
	r.count--
	return int(i)
}

// popBack takes the most recently pushed index.
func (r *ring) popBack() int {
	r.count--
	return int(r.buf[(r.head+r.count)%len(r.buf)])
}

// newPool makes the pool of [portMin, portMax]: a freed pair is not handed
// out within quarantine, or within warmQ when it stayed bound and silent
// (raw pools; warmQ <= 0 or above quarantine means quarantine).
func newPool(listen netip.Addr, portMin, portMax int, quarantine, warmQ time.Duration, inUse prometheus.Gauge, raw bool) *pool {
	n := (portMax - portMin + 1) / 2
	if warmQ <= 0 || warmQ > quarantine {
		warmQ = quarantine
	}
	p := &pool{listen: listen, min: portMin, quarantine: quarantine, warmQ: warmQ, inUse: inUse, raw: raw && rawSupported,
		pairs: make([]pair, n), cold: ring{buf: make([]int32, n)}}
	if p.raw {
		p.warm = ring{buf: make([]int32, n)}
		p.fdBudget = fdBudget()
	}
	for _, c := range []*prometheus.Counter{&p.reused, &p.bound, &p.refused} {
		*c = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"}) // the relay sets its own
	}
	start := rand.IntN(n)
	for i := range n {
		idx := (start + i) % n
		p.pairs[idx] = pair{port: portMin + 2*idx, idx: idx, rtpFD: -1, rtcpFD: -1}
		p.cold.push(idx)
	}
	return p
}

// get returns a pair with bound sockets, or an error wrapping ErrNoPorts.
func (p *pool) get() (*pair, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	now := time.Now()
	for p.warm.count > 0 {
		pr := &p.pairs[p.warm.at(0)]
		if now.Sub(pr.freed) < p.warmQ {
			break
		}
		p.warm.pop()
		if p.checked > 0 {
			p.checked--
		}
		// Anything queued now arrived after the mid-quarantine drain (or,
		// unchecked, at any time since the call ended): not silent, so
		// closed and quarantined in full from now.
		if queued(pr.rtpFD, pr.rtcpFD) {
			p.unbindLocked(pr)
			pr.freed = now
			p.cold.push(pr.idx)
			p.refused.Inc()
			continue
		}
		p.reused.Inc()
		p.busy++
		p.inUse.Add(2)
		return pr, nil
	}
	var lastErr error
	for tries := p.cold.count; tries > 0; tries-- {
		pr := &p.pairs[p.cold.at(0)]
		if !pr.freed.IsZero() && now.Sub(pr.freed) < p.quarantine {
			break // everything behind it was freed later still
		}
		for p.warm.count > 0 && 2*(p.busy+p.warm.count+1) > p.fdBudget {
			p.coolNewest()
		}
		p.cold.pop()
		if err := p.bind(pr); err != nil {
			// Not quarantined anew (nothing of a call can arrive on a port
			// we never bound): back of the queue with its old time.
			lastErr = err
			p.cold.push(pr.idx)
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) {
				if p.warm.count > 0 {
					p.coolNewest() // a call needs the descriptors more
					tries++
					continue
				}
				break // out of descriptors: every other pair fails the same way
			}
			continue
		}
		p.bound.Inc()
		p.busy++
		p.inUse.Add(2)
		return pr, nil
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w (last bind error: %v)", ErrNoPorts, lastErr)
	}
	return nil, ErrNoPorts
}

func (p *pool) bind(pr *pair) error {
	rtpAP := netip.AddrPortFrom(p.listen, uint16(pr.port))
	rtcpAP := netip.AddrPortFrom(p.listen, uint16(pr.port+1))
	if p.raw {
		rtp, err := bindRaw(rtpAP)
		if err != nil {
			return err
		}
		rtcp, err := bindRaw(rtcpAP)
		if err != nil {
			closeFD(rtp)
			return err
		}
		pr.rtpFD, pr.rtcpFD = rtp, rtcp
		return nil
	}
	rtp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(rtpAP))
	if err != nil {
		return err
	}
	rtcp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(rtcpAP))
	if err != nil {
		rtp.Close()
		return err
	}
	pr.rtp, pr.rtcp = rtp, rtcp
	return nil
}

// coolNewest closes the most recently freed warm pair; its quarantine
// goes on, cold: the whole quarantine from when it was freed.
func (p *pool) coolNewest() {
	pr := &p.pairs[p.warm.popBack()]
	p.checked = min(p.checked, p.warm.count)
	p.unbindLocked(pr)
	p.cold.push(pr.idx)
}

func (p *pool) unbindLocked(pr *pair) {
	if pr.rtpFD >= 0 {
		closeFD(pr.rtpFD)
		closeFD(pr.rtcpFD)
		pr.rtpFD, pr.rtcpFD = -1, -1
		pr.wi = [2]uint8{}
	}
	if pr.rtp != nil {
		pr.rtp.Close()
		pr.rtcp.Close()
		pr.rtp, pr.rtcp = nil, nil
	}
}

// put takes back a pair nothing serves any more; it is quarantined. A raw
// pool keeps its sockets bound (warm); a conn pool forgets its conns, which
// whoever served them has closed.
func (p *pool) put(pr *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse.Sub(2)
	p.busy--
	pr.freed = time.Now()
	pr.rtp, pr.rtcp = nil, nil
	if p.raw && !p.closed && 2*(p.busy+p.warm.count+1) <= p.fdBudget {
		p.warm.push(pr.idx)
		return
	}
	p.unbindLocked(pr)
	p.cold.push(pr.idx)
}

// sweep drains warm pairs that reached the middle of their warm quarantine
// and closes those that waited one more quarantine after it ended. Run
// calls it every sweepEvery.
func (p *pool) sweep() {
	if !p.raw {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for p.warm.count > 0 {
		pr := &p.pairs[p.warm.at(0)]
		if now.Sub(pr.freed) < p.warmQ+p.quarantine {
			break
		}
		p.warm.pop()
		if p.checked > 0 {
			p.checked--
		}
		p.unbindLocked(pr)
		p.cold.push(pr.idx) // its quarantine is over
	}
	fds := p.sweepFDs[:0]
	for p.checked < p.warm.count {
		pr := &p.pairs[p.warm.at(p.checked)]
		if now.Sub(pr.freed) < p.warmQ/2 {
			break
		}
		fds = append(fds, pr.rtpFD, pr.rtcpFD)
		p.checked++
	}
	drainQueued(fds, &p.scratch)
	p.sweepFDs = fds[:0]
}

// sweepEvery is how often Run sweeps: a quarter of the warm quarantine
// (10 ms..1 s), so the mid-quarantine drain is at most that late.
func (p *pool) sweepEvery() time.Duration {
	return min(max(p.warmQ/4, 10*time.Millisecond), time.Second)
}

// close unbinds every pair; the engine must have stopped (Run's shutdown).
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for i := range p.pairs {
		p.unbindLocked(&p.pairs[i])
	}
}
