//go:build linux

// Command callbench measures calls per second through the gateway against
// SIPp talking to SIPp directly (the ceiling) and Kamailio with rtpengine
// (the C reference), side by side in one run (issue 6; docs/benchmarks.md).
//
// Every system gets the same SIPp scenarios (scenarios/uac.xml and
// uas.xml: the built-in uac/uas flows with SDP in the INVITE and the 200,
// a 180, 1-second calls, and SIP transaction matching on the caller so a
// 180 a proxy relays after the 200 does not fail the call). The callee, the
// PBX stand-in, listens on 127.0.0.2. The systems:
//
//	direct     SIPp caller -> SIPp callee
//	gateway    SIPp caller -> cusax-gw (the real binary, generated config,
//	           embedded relay on 127.0.0.3 anchoring every call) -> callee
//	kamailio   SIPp caller -> Kamailio 5.6 (stateful proxy, record-routing,
//	           rtpengine_offer/answer/delete) + rtpengine (userspace, on
//	           127.0.0.4) -> callee
//
// For each run, rate and system (the order of the systems rotated every
// run; every measurement starts the system fresh) it places rate x
// duration calls at that rate and reports calls attempted, succeeded and
// failed (SIPp's statistics), SIPp retransmissions, the call setup time
// distribution, the CPU time per call of the system under test (utime +
// stime from /proc/<pid>/stat of every process of the system, rtpengine
// included, from the first call until 2 s after the last ended), its peak
// memory, the generator's CPU and the machine's load. A summary gives per
// system and rate the pass count over the runs (a pass: every call
// succeeded) and the failure point; the last line is
//
//	gateway_max_cps=N kamailio_rtpengine_max_cps=M sipp_direct_max_cps=D
//
// where each figure is the highest rate at which every run passed (0: none).
//
// Usage:
//
//	go run ./bench/callbench                 # 1000..3000 calls/s, 3 runs, 15 s per rate
//	go run ./bench/callbench -quick          # seconds: 50 calls/s for 2 s, 1 run
//	scripts/callbench.sh [flags]             # installs SIPp, Kamailio, rtpengine first
//
// Linux only (taskset, /proc); loopback only (127.0.0.1 to 127.0.0.4).
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "callbench:", err)
		os.Exit(1)
	}
}

// Loopback addresses: the callee (PBX stand-in), our relay's media, and
// rtpengine's media. Media on their own addresses keeps the wide port
// ranges clear of other programs' sockets on 127.0.0.1.
const (
	calleeIP    = "127.0.0.2"
	relayIP     = "127.0.0.3"
	rtpengineIP = "127.0.0.4"
)

// Names of the systems.
const (
	sysDirect   = "direct"
	sysGateway  = "gateway"
	sysKamailio = "kamailio"
)

type options struct {
	rates     []int
	systems   []string
	runs      int
	duration  time.Duration // calls are placed for this long at each rate
	callLen   time.Duration // pause between ACK and BYE
	settle    time.Duration // CPU is counted until this long after the caller exited
	sutCPU    int           // core of the system under test; -1 no pinning
	sippCPU   int           // core of both SIPp instances and the harness
	gateway   string        // cusax-gw binary; empty: built from ./cmd/cusax-gw
	sipp      string
	kamailio  string
	rtpengine string
	logLevel  string // the gateway's log.level
	memLimit  int    // the gateway's runtime.memory_limit in MiB (0: none)
	udpBuf    int    // the gateway's sip.udp_receive_buffer in bytes (0: its default)
	kamChild  int    // Kamailio UDP worker processes
	keep      bool   // keep the working directory
	trace     bool   // the callee traces every message (SIPp -trace_msg)
	workdir   string // parent of the work dir
	perf      string // record a perf profile of the gateway's first measurement at perfRate into this file
	perfRate  int
	heap      string // save the gateway's heap profile in the middle of that measurement into this file
	cpuprof   string // save the gateway's Go CPU profile of that measurement's middle third into this file
	idleBelow float64
	idleWait  time.Duration
	busyProbe time.Duration
	verbose   io.Writer
	sets      gatewaySets // -gateway-set: written over the generated gateway config
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("callbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a few seconds: 50 calls/s for 2 s, 1 run (overrides -rates, -runs, -duration)")
	rates := fs.String("rates", "1000,1500,2000,2500,3000", "calls per second to sweep")
	systems := fs.String("systems", "direct,gateway,kamailio", "systems: direct (SIPp to SIPp), gateway (cusax-gw), kamailio (Kamailio + rtpengine)")
	runs := fs.Int("runs", 3, "repetitions; systems are interleaved within each run")
	duration := fs.Duration("duration", 15*time.Second, "how long calls are placed at each rate (calls = rate x duration)")
	callLen := fs.Duration("call-length", time.Second, "call length (ACK to BYE)")
	sutCPU := fs.Int("sut-cpu", 0, "core the system under test is pinned to (-1: no pinning)")
	sippCPU := fs.Int("sipp-cpu", 1, "core both SIPp instances (and this harness) are pinned to (-1: no pinning)")
	gw := fs.String("gateway", "", "cusax-gw binary (default: go build ./cmd/cusax-gw into the work dir)")
	sipp := fs.String("sipp", "sipp", "SIPp binary")
	kam := fs.String("kamailio", "kamailio", "Kamailio binary")
	rtpe := fs.String("rtpengine", "rtpengine", "rtpengine binary")
	logLevel := fs.String("gateway-log-level", "info", "the gateway's log.level (its JSON log goes to a file in the work dir)")
	udpBuf := fs.Int("gateway-udp-buffer", 0, "the gateway's sip.udp_receive_buffer in bytes (0: the gateway's default)")
	memLimit := fs.Int("gateway-memory-limit", 0, "the gateway's runtime.memory_limit in MiB (GOMEMLIMIT; 0: none, the default)")
	kamChild := fs.Int("kamailio-children", 8, "Kamailio UDP worker processes")
	keep := fs.Bool("keep", false, "keep the work dir (configs, logs, SIPp statistics)")
	trace := fs.Bool("trace", false, "the callee writes every SIP message it sees into its dir (with -keep: to check what the systems forward)")
	perf := fs.String("perf", "", "record a perf profile (perf record -g) of the gateway during its first measurement at -perf-rate into this file")
	heap := fs.String("heap", "", "save the gateway's heap profile (its /debug/pprof/heap) two thirds into its first measurement at -perf-rate into this file")
	cpuprof := fs.String("cpuprofile", "", "save the gateway's Go CPU profile (its /debug/pprof/profile) of the middle third of its first measurement at -perf-rate into this file")
	perfRate := fs.Int("perf-rate", 0, "rate whose first gateway measurement -perf records (default: the highest rate)")
	idleBelow := fs.Float64("idle-below", 0, "before each measurement wait (up to -idle-wait) until the machine is less busy than this fraction of all CPUs; 0: do not wait")
	idleWait := fs.Duration("idle-wait", 2*time.Minute, "longest wait for -idle-below")
	verbose := fs.Bool("v", false, "progress on stderr")
	workdir := fs.String("workdir", "", "where the work dir is created (default: $TMPDIR)")
	var sets gatewaySets
	fs.Var(&sets, "gateway-set", "section.key=value written over the generated gateway config (repeatable; the value is YAML: 2s, 300, true)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o := &options{runs: *runs, duration: *duration, callLen: *callLen, settle: 2 * time.Second,
		sutCPU: *sutCPU, sippCPU: *sippCPU, gateway: *gw, logLevel: *logLevel, memLimit: *memLimit, udpBuf: *udpBuf, kamChild: *kamChild,
		keep: *keep, trace: *trace, workdir: *workdir, perf: *perf, heap: *heap, cpuprof: *cpuprof, idleBelow: *idleBelow, idleWait: *idleWait, busyProbe: time.Second, verbose: io.Discard}
	o.sets = sets
	if *verbose {
		o.verbose = stderr
	}
	if *quick {
		*rates, o.runs, o.duration, o.settle, o.busyProbe = "50", 1, 2*time.Second, 500*time.Millisecond, 100*time.Millisecond
	}
	for f := range strings.SplitSeq(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-rates: %q is not a positive number of calls per second", f)
		}
		o.rates = append(o.rates, n)
	}
	for f := range strings.SplitSeq(*systems, ",") {
		switch f = strings.TrimSpace(f); f {
		case sysDirect, sysGateway, sysKamailio:
			if !slices.Contains(o.systems, f) {
				o.systems = append(o.systems, f)
			}
		default:
			return nil, fmt.Errorf("-systems: unknown system %q", f)
		}
	}
	if *udpBuf < 0 {
		return nil, fmt.Errorf("-gateway-udp-buffer %d: must not be negative", *udpBuf)
	}
	if o.memLimit < 0 {
		return nil, errors.New("-gateway-memory-limit must not be negative")
	}
	if o.runs < 1 || o.duration <= 0 || o.callLen <= 0 {
		return nil, errors.New("-runs must be >= 1, -duration and -call-length positive")
	}
	o.perfRate = *perfRate
	if o.perfRate == 0 {
		o.perfRate = slices.Max(o.rates)
	}
	if (o.sutCPU >= 0 || o.sippCPU >= 0) && runtime.NumCPU() < 2 {
		fmt.Fprintln(stderr, "callbench: one CPU: not pinning")
		o.sutCPU, o.sippCPU = -1, -1
	}
	var err error
	need := map[string]*string{"sipp": &o.sipp}
	o.sipp, o.kamailio, o.rtpengine = *sipp, *kam, *rtpe
	if slices.Contains(o.systems, sysKamailio) {
		need["kamailio"], need["rtpengine"] = &o.kamailio, &o.rtpengine
	}
	if o.sutCPU >= 0 || o.sippCPU >= 0 {
		taskset := "taskset"
		need["taskset"] = &taskset
	}
	if o.perf != "" {
		p := "perf"
		need["perf"] = &p
	}
	for name, p := range need {
		if *p, err = exec.LookPath(*p); err != nil {
			return nil, fmt.Errorf("%s not found (scripts/callbench.sh installs SIPp, Kamailio and rtpengine): %w", name, err)
		}
	}
	return o, nil
}

// result is one measurement: one run of one system at one rate.
type result struct {
	run, rate int
	system    string
	load      string  // /proc/loadavg before
	busy      float64 // fraction of all CPUs busy just before (other programs)

	expected  int // calls the caller was asked to place
	attempted int // calls it created
	succeeded int
	failed    int
	retrans   int     // SIPp retransmissions, caller and callee
	genRate   float64 // calls created per second while placing them
	setupP50  float64 // call setup time (INVITE to 200) percentiles, ms, from SIPp's buckets
	setupP99  float64
	sutCPU    time.Duration // CPU of the system under test over the measurement
	sutProcs  int           // its processes
	peakMem   int64         // bytes: peak RSS (one process) or peak sum of PSS (Kamailio's processes) plus rtpengine's peak RSS
	genCPU    float64       // both SIPps' CPU, fraction of a core, while calls were placed
	wall      time.Duration
	note      string
}

// pass reports whether every call was placed and succeeded.
func (r *result) pass() bool {
	return r.attempted == r.expected && r.succeeded == r.expected && r.failed == 0
}

// cpuPerCall is the system's CPU per successful call in ms; NaN for direct.
func (r *result) cpuPerCall() float64 {
	if r.system == sysDirect || r.succeeded == 0 {
		return math.NaN()
	}
	return float64(r.sutCPU) / 1e6 / float64(r.succeeded)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	raiseNofile()
	if o.sippCPU >= 0 {
		if err := host.PinSelf(o.sippCPU); err != nil {
			return fmt.Errorf("callbench: %w", err)
		}
	}
	dir, err := os.MkdirTemp(o.workdir, "callbench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "callbench: work dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := writeScenarios(dir); err != nil {
		return err
	}
	if slices.Contains(o.systems, sysGateway) && o.gateway == "" {
		o.gateway = dir + "/cusax-gw"
		fmt.Fprintln(o.verbose, "callbench: building cusax-gw")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.gateway, "github.com/cusax-gw/cusax-gw/cmd/cusax-gw")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/cusax-gw: %v\n%s", err, out)
		}
	}

	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "# callbench %s: host %s, %d CPUs, %s/%s, %s; system under test on cpu %d, SIPp (caller and callee) on cpu %d\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), o.sutCPU, o.sippCPU)
	fmt.Fprintf(stdout, "# rates (calls/s): %v; systems: %v; runs %d; calls placed for %v per rate, %v calls; gateway log.level %s, memory limit %s; kamailio children %d; open files %d\n",
		o.rates, o.systems, o.runs, o.duration, o.callLen, o.logLevel, memLimitText(o.memLimit), o.kamChild, nofileLimit())
	fmt.Fprintf(stdout, "%-3s %-5s %-8s %7s %7s %7s %6s %6s %7s %6s %6s %8s %6s %7s %6s %5s %-14s %s\n",
		"run", "rate", "system", "attempt", "success", "failed", "retr", "gen_cps", "p50_ms", "p99_ms", "pass", "cpu_ms/c", "sut%", "peak_MB", "sipp%", "busy%", "loadavg", "note")
	var results []*result
	for r := 1; r <= o.runs; r++ {
		for _, rate := range o.rates {
			for j := range o.systems {
				name := o.systems[(j+r-1)%len(o.systems)] // a different order each run
				if err := ctx.Err(); err != nil {
					return err
				}
				profiled := name == sysGateway && r == 1 && rate == o.perfRate
				res, err := measure(ctx, o, dir, name, rate, profiled)
				if err != nil {
					return fmt.Errorf("run %d, %d calls/s, %s: %w", r, rate, name, err)
				}
				res.run = r
				results = append(results, res)
				pass := "FAIL"
				if res.pass() {
					pass = "ok"
				}
				fmt.Fprintf(stdout, "%-3d %-5d %-8s %7d %7d %7d %6d %6.0f %7.1f %6.1f %6s %8.3f %6.1f %7.1f %6.1f %5.0f %-14s %s\n",
					res.run, res.rate, res.system, res.attempted, res.succeeded, res.failed, res.retrans, res.genRate,
					res.setupP50, res.setupP99, pass, res.cpuPerCall(),
					100*res.sutCPU.Seconds()/res.wall.Seconds(), float64(res.peakMem)/1e6, 100*res.genCPU, 100*res.busy, res.load, res.note)
			}
		}
	}
	return summarize(stdout, o, results)
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

// memLimitText is the gateway's memory limit as the header prints it.
func memLimitText(mib int) string {
	if mib == 0 {
		return "none"
	}
	return strconv.Itoa(mib) + " MiB"
}
