//go:build linux

// Command relaybench measures the media relay against rtpengine, side by
// side in one run (issue 5; docs/benchmarks.md).
//
// It runs each system under test as its own process pinned to one core:
// our relay (package rtprelay) once per engine, goroutine and epoll (the
// harness re-executing itself in relay mode and driving rtprelay.Relay with
// Offer/Answer over a pipe), rtpengine in userspace mode (--table=-1, one
// thread, driven through rtprelay.NGClient), and "direct" (no relay: the
// phones send to each other; the harness's own ceiling). The generator,
// this process, is pinned to another core. Every call is two phones on
// 127.0.0.1 sending paced 20 ms PCMA packets (50 packets/s per stream, as
// rtpengine discards sockets that flood) through the relay to each other.
//
// For each run, load (streams; 50 packets/s each) and system, in an order
// rotated every run, it prints delivered packets/s, loss, p50/p99 added
// latency (send time in the payload to the kernel receive timestamp at the
// other phone), the relay process's CPU per packet (/proc/<pid>/stat over
// the measured window), its RSS and RSS growth per 1,000 calls, the
// generator's CPU and late sends, and the load average. A summary with
// medians, the ratio to rtpengine of the same run and the targets
// follows; the last line is
//
//	relay_cpu_per_packet_ratio_vs_rtpengine=R
//
// for the default engine (internal/config Default) at the load closest to
// 50,000 packets/s.
//
// Usage:
//
//	go run ./bench/relaybench                 # 200,1000,2000 streams, 3 runs, 10 s windows
//	go run ./bench/relaybench -quick          # seconds: 20 streams, 1 run
//	scripts/relaybench.sh [flags]             # installs rtpengine first, then the same
//
// Linux only (taskset, /proc, SO_TIMESTAMPNS); loopback only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cusax-gw/cusax-gw/bench/internal/host"
	"github.com/cusax-gw/cusax-gw/internal/config"
)

func main() {
	if engine := os.Getenv(envRelay); engine != "" {
		if err := relayChild(engine, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

type options struct {
	loads     []int
	systems   []string
	runs      int
	duration  time.Duration
	warmup    time.Duration
	relayCPU  int
	genCPU    int
	pmin      int
	pmax      int
	rtpengine string
	lanes     int
	tick      time.Duration // the generator's period
	idleBelow float64       // wait for the machine to be less busy than this before each measurement
	idleWait  time.Duration // at most this long
	busyProbe time.Duration // how long the machine's busy fraction is sampled
	engine    string        // the default engine, for the last line
	marginal  int           // calls added at scale for the marginal RSS; 0: not measured
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("relaybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a few seconds: 20 streams, 1 run, 0.5 s windows (overrides -loads, -runs, -duration, -warmup)")
	loads := fs.String("loads", "200,1000,2000", "loads in streams of 50 packets/s (two streams per call)")
	systems := fs.String("systems", "goroutine,epoll,rtpengine,direct", "systems to measure: goroutine, epoll (our relay's engines), rtpengine, direct (no relay)")
	runs := fs.Int("runs", 3, "repetitions; systems are interleaved within each run")
	duration := fs.Duration("duration", 10*time.Second, "measured window per run, load and system")
	warmup := fs.Duration("warmup", 3*time.Second, "traffic before the window (latching, caches)")
	relayCPU := fs.Int("relay-cpu", 0, "core the relay processes are pinned to (-1: no pinning)")
	genCPU := fs.Int("gen-cpu", 1, "core the generator is pinned to (-1: no pinning)")
	marginal := fs.Int("marginal", 1000, "after the window, measure the RSS of this many more (silent) calls added to at least as many (0: not measured)")
	ports := fs.String("ports", "12000-27999", "RTP port range given to each relay (four ports per call)")
	rtpe := fs.String("rtpengine", "rtpengine", "rtpengine binary")
	idleBelow := fs.Float64("idle-below", 0, "before each measurement wait (up to -idle-wait) until the machine is less busy than this fraction of all CPUs; 0: do not wait")
	idleWait := fs.Duration("idle-wait", 2*time.Minute, "longest wait for -idle-below")
	lanes := fs.Int("lanes", 16, "generator sockets the phones share (sendmmsg/recvmmsg batches)")
	tick := fs.Duration("tick", 100*time.Microsecond, "the generator's period: each tick it sends what is due and reads what arrived")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o := &options{runs: *runs, duration: *duration, warmup: *warmup, relayCPU: *relayCPU, genCPU: *genCPU, lanes: *lanes, tick: *tick,
		idleBelow: *idleBelow, idleWait: *idleWait, busyProbe: time.Second, marginal: *marginal,
		rtpengine: *rtpe, engine: config.Default().RTP.Engine}
	if *quick {
		*loads, o.runs, o.duration, o.warmup = "20", 1, 500*time.Millisecond, 200*time.Millisecond
		o.busyProbe = 100 * time.Millisecond
	}
	for f := range strings.SplitSeq(*loads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n%2 != 0 {
			return nil, fmt.Errorf("-loads: %q is not an even number of streams >= 2", f)
		}
		o.loads = append(o.loads, n)
	}
	for f := range strings.SplitSeq(*systems, ",") {
		switch f = strings.TrimSpace(f); f {
		case "goroutine", "epoll", "rtpengine", "direct":
			o.systems = append(o.systems, f)
		default:
			return nil, fmt.Errorf("-systems: unknown system %q", f)
		}
	}
	if o.runs < 1 || o.duration <= 0 || o.warmup < 0 || o.tick <= 0 {
		return nil, errors.New("-runs must be >= 1, -duration and -tick positive")
	}
	var err error
	if o.pmin, o.pmax, err = parsePorts(*ports); err != nil {
		return nil, err
	}
	if o.marginal < 0 {
		return nil, errors.New("-marginal must be >= 0")
	}
	if need := 4 * o.maxCalls(); o.pmax-o.pmin+1 < need {
		return nil, fmt.Errorf("-ports %s: %d calls (%d streams, -marginal %d) need %d ports", *ports, o.maxCalls(), slices.Max(o.loads), o.marginal, need)
	}
	if (o.relayCPU >= 0 || o.genCPU >= 0) && runtime.NumCPU() < 2 {
		fmt.Fprintln(stderr, "relaybench: one CPU: not pinning")
		o.relayCPU, o.genCPU = -1, -1
	}
	if slices.Contains(o.systems, "rtpengine") {
		if o.rtpengine, err = exec.LookPath(o.rtpengine); err != nil {
			return nil, fmt.Errorf("rtpengine not found (scripts/relaybench.sh installs it, or leave it out of -systems): %w", err)
		}
	}
	if o.relayCPU >= 0 {
		if _, err := exec.LookPath("taskset"); err != nil {
			return nil, fmt.Errorf("taskset (util-linux) is needed to pin the relays (or -relay-cpu -1): %w", err)
		}
	}
	return o, nil
}

// maxCalls is the most calls a relay holds: the largest load's, padded to
// -marginal, plus -marginal.
func (o *options) maxCalls() int {
	n := slices.Max(o.loads) / 2
	if o.marginal > 0 {
		n = max(n, o.marginal) + o.marginal
	}
	return n
}

// result is one measurement: one run of one system at one load.
type result struct {
	run, streams int
	system       string
	load         string  // /proc/loadavg before
	busy         float64 // fraction of all CPUs busy just before (other programs)
	sentPPS      float64 // packets/s sent by the generator in the window
	delivered    float64 // packets/s sent in the window and received
	loss         float64 // fraction of the window's packets not received
	p50, p99     float64 // µs
	cpuPerPkt    float64 // µs of relay CPU per delivered packet; NaN for direct
	rss, rss0    int64   // relay RSS in the window and before the calls; 0 for direct
	rssGC        int64   // our relay's RSS after returning its garbage to the OS; 0 for others
	mrss, mrssGC float64 // marginal RSS per 1,000 calls at scale (mbase -> mbase+marginal calls), and after FreeOSMemory; NaN if not measured
	mbase        int     // calls before the marginal ones
	genCPU       float64 // generator CPU, fraction of a core
	late         uint64  // generator sends more than 5 ms behind schedule
	relayDrops   uint64  // packets dropped by full receive queues of sockets in the relay's port range
	genDrops     uint64  // the same for the generator's sockets
}

func (r *result) drssPer1k() float64 {
	if r.rss == 0 {
		return math.NaN()
	}
	return float64(r.rss-r.rss0) / float64(r.streams/2) * 1000
}

// drssGCPer1k is drssPer1k after our relay returned its garbage to the OS
// (debug.FreeOSMemory); NaN for rtpengine and direct.
func (r *result) drssGCPer1k() float64 {
	if r.rssGC == 0 {
		return math.NaN()
	}
	return float64(r.rssGC-r.rss0) / float64(r.streams/2) * 1000
}

// measureMarginal measures what calls cost at scale, in the same process
// after the window: it pads the relay to at least o.marginal calls (silent:
// no media), lets our relay return its free memory to the OS, sets up
// o.marginal more silent calls and takes the RSS growth per 1,000 calls
// (mrss: live state plus the garbage the setups made before the next GC,
// as in a running gateway), then the same after our relay returned its
// garbage again (mrssGC: what stays). The Go runtime's fixed floor (the GC
// lets the heap grow to 4 MB before its first cycle) and the window's
// garbage are not in it; they are in dRSS/1k, measured from the idle
// process.
func measureMarginal(ctx context.Context, o *options, sys system, pid int, res *result) error {
	calls := res.streams / 2
	add := func(n int, prefix string) error {
		for i := range n {
			id := fmt.Sprintf("%s-%d@relaybench", prefix, i)
			if err := setupSilentCall(ctx, sys, id); err != nil {
				return fmt.Errorf("silent call %d: %w", i, err)
			}
		}
		return nil
	}
	if err := add(max(0, o.marginal-calls), "pad"); err != nil {
		return err
	}
	res.mbase = max(calls, o.marginal)
	our, _ := sys.(*ourRelay)
	if our != nil {
		if _, err := our.do(ctlReq{Op: opGC}); err != nil {
			return err
		}
	}
	a, err := procRSS(pid)
	if err != nil {
		return err
	}
	if err := add(o.marginal, "more"); err != nil {
		return err
	}
	b, err := procRSS(pid)
	if err != nil {
		return err
	}
	res.mrss = float64(b-a) / float64(o.marginal) * 1000
	if our != nil {
		if _, err := our.do(ctlReq{Op: opGC}); err != nil {
			return err
		}
		c, err := procRSS(pid)
		if err != nil {
			return err
		}
		res.mrssGC = float64(c-a) / float64(o.marginal) * 1000
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	raiseNofile()
	if o.genCPU >= 0 {
		if err := host.PinSelf(o.genCPU); err != nil {
			return fmt.Errorf("relaybench: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "# relaybench %s: host %s, %d CPUs, %s/%s, %s; relay on cpu %d, generator on cpu %d\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.relayCPU, o.genCPU)
	fmt.Fprintf(stdout, "# loads (streams x 50 pps): %v; systems: %v; runs %d; window %v after %v warmup; default engine %s\n",
		o.loads, o.systems, o.runs, o.duration, o.warmup, o.engine)
	fmt.Fprintf(stdout, "%-3s %-6s %-9s %9s %9s %8s %7s %7s %8s %8s %9s %7s %8s %7s %6s %5s %5s %5s %5s %s\n",
		"run", "load", "system", "sent_pps", "deliv_pps", "loss%", "p50_us", "p99_us", "cpu_us/p", "rss_MB", "dRSS/1k", "dRSSgc", "mRSS/1k", "mRSSgc", "gen%", "late", "rdrop", "gdrop", "busy%", "loadavg")
	var results []*result
	for r := 1; r <= o.runs; r++ {
		for _, streams := range o.loads {
			for j := range o.systems {
				name := o.systems[(j+r-1)%len(o.systems)] // a different order each run
				if err := ctx.Err(); err != nil {
					return err
				}
				res, err := measure(ctx, o, dir, name, streams)
				if err != nil {
					return fmt.Errorf("run %d, %d streams, %s: %w", r, streams, name, err)
				}
				res.run = r
				results = append(results, res)
				fmt.Fprintf(stdout, "%-3d %-6d %-9s %9.0f %9.0f %8.4f %7.0f %7.0f %8.2f %8.1f %9.2f %7.2f %8.2f %7.2f %6.1f %5d %5d %5d %5.0f %s\n",
					res.run, res.streams, res.system, res.sentPPS, res.delivered, 100*res.loss, res.p50, res.p99,
					res.cpuPerPkt, float64(res.rss)/1e6, res.drssPer1k()/1e6, res.drssGCPer1k()/1e6, res.mrss/1e6, res.mrssGC/1e6, 100*res.genCPU, res.late, res.relayDrops, res.genDrops, 100*res.busy, res.load)
			}
		}
	}
	return summarize(stdout, o, results)
}

// measure starts one system, sets up streams/2 calls through it, sends for
// warmup+duration and returns what the window saw.
func measure(ctx context.Context, o *options, dir, name string, streams int) (res *result, err error) {
	res = &result{streams: streams, system: name, cpuPerPkt: math.NaN(), mrss: math.NaN(), mrssGC: math.NaN()}
	for start := time.Now(); ; {
		res.busy = host.MachineBusy(o.busyProbe)
		if o.idleBelow <= 0 || res.busy < o.idleBelow || time.Since(start) > o.idleWait || ctx.Err() != nil {
			break
		}
	}
	res.load = host.Loadavg()
	var sys system
	switch name {
	case "goroutine", "epoll":
		sys, err = startOurRelay(name, o.relayCPU, o.pmin, o.pmax, dir)
	case "rtpengine":
		sys, err = startRtpengine(o.rtpengine, o.relayCPU, o.pmin, o.pmax, dir)
	default:
		sys = direct{}
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := sys.close(); cerr != nil && err == nil {
			err = fmt.Errorf("stop %s: %w", name, cerr)
		}
	}()
	pid := sys.pid()
	if pid != 0 {
		if res.rss0, err = procRSS(pid); err != nil {
			return nil, err
		}
	}

	g, err := newGenerator(streams/2, o.lanes, o.tick)
	if err != nil {
		return nil, err
	}
	for i := range streams / 2 {
		id := fmt.Sprintf("bench-%d@relaybench", i)
		if err := setupCall(ctx, sys, id, g.phones[2*i], g.phones[2*i+1]); err != nil {
			g.close()
			return nil, fmt.Errorf("call %d: %w", i, err)
		}
	}

	sendCtx, stopSend := context.WithCancel(ctx)
	defer stopSend()
	g.start(sendCtx)
	defer func() {
		stopSend()
		g.close()
	}()
	if !sleep(ctx, o.warmup) {
		return nil, ctx.Err()
	}
	var cpu0 int64
	if pid != 0 {
		if cpu0, err = procCPU(pid); err != nil {
			return nil, err
		}
	}
	drops0 := udpDrops()
	gen0, t0 := selfCPU(), time.Now()
	g.phase.Store(phaseMeasure)
	if !sleep(ctx, o.duration) {
		return nil, ctx.Err()
	}
	g.phase.Store(phaseDone)
	window := time.Since(t0)
	gen1 := selfCPU()
	var cpu1 int64
	if pid != 0 {
		if cpu1, err = procCPU(pid); err != nil {
			return nil, err
		}
		if res.rss, err = procRSS(pid); err != nil {
			return nil, err
		}
	}
	if r, ok := sys.(*ourRelay); ok {
		if _, err := r.do(ctlReq{Op: opGC}); err != nil {
			return nil, err
		}
		if res.rssGC, err = procRSS(pid); err != nil {
			return nil, err
		}
	}
	// Wait for the window's packets still in flight (or queued in a
	// starved relay): until none arrived for 200 ms, at most 3 s.
	for deadline, last := time.Now().Add(3*time.Second), uint64(0); time.Now().Before(deadline); {
		if !sleep(ctx, 200*time.Millisecond) {
			break
		}
		n := g.st.received.Load()
		if n == last || n >= g.st.sent.Load() {
			break
		}
		last = n
	}
	drops1 := udpDrops()
	stopSend()
	inRange := func(p uint16) bool { return int(p) >= o.pmin && int(p) <= o.pmax }
	res.relayDrops = dropsIn(drops0, drops1, inRange)
	lanePorts := map[uint16]bool{}
	for _, l := range g.lanes {
		lanePorts[l.addr.Port()] = true
	}
	res.genDrops = dropsIn(drops0, drops1, func(p uint16) bool { return lanePorts[p] })
	if pid != 0 && o.marginal > 0 {
		if err := measureMarginal(ctx, o, sys, pid, res); err != nil {
			return nil, fmt.Errorf("marginal RSS: %w", err)
		}
	}

	sent, got := g.st.sent.Load(), g.st.received.Load()
	res.sentPPS = float64(sent) / window.Seconds()
	res.delivered = float64(got) / window.Seconds()
	if sent > 0 {
		res.loss = max(0, float64(sent)-float64(got)) / float64(sent)
	}
	res.p50, res.p99 = g.st.quantile(0.50), g.st.quantile(0.99)
	if pid != 0 && got > 0 {
		res.cpuPerPkt = float64(cpu1-cpu0) / 1e3 / float64(got)
	}
	res.genCPU = float64(gen1-gen0) / float64(window)
	res.late = g.st.late.Load()
	return res, nil
}

// setupCall anchors call id through sys (offer from phone a, answer from
// phone b) and points each phone at the relay port facing it.
func setupCall(ctx context.Context, sys system, id string, a, b *phone) error {
	m := sys.media()
	if m == nil {
		a.setDst(b.lane.addr)
		b.setDst(a.lane.addr)
		return nil
	}
	toB, err := m.Offer(ctx, id, "a-"+id, a.sdp("alice"))
	if err != nil {
		return fmt.Errorf("offer: %w", err)
	}
	toA, err := m.Answer(ctx, id, "b-"+id, b.sdp("bob"))
	if err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	dstB, err := sdpAddr(toB)
	if err != nil {
		return err
	}
	dstA, err := sdpAddr(toA)
	if err != nil {
		return err
	}
	a.setDst(dstA)
	b.setDst(dstB)
	return nil
}

// setupSilentCall anchors call id through sys for phones that send nothing
// (port 9, discard): what a call costs the relay without its media.
func setupSilentCall(ctx context.Context, sys system, id string) error {
	m := sys.media()
	if _, err := m.Offer(ctx, id, "a-"+id, phoneSDP("alice", 9)); err != nil {
		return fmt.Errorf("offer: %w", err)
	}
	if _, err := m.Answer(ctx, id, "b-"+id, phoneSDP("bob", 9)); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	return nil
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
