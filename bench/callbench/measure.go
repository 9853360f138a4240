//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cusax-gw/cusax-gw/bench/internal/host"
)

// measure starts the system and the callee, places rate x duration calls
// through it and returns what SIPp and /proc saw. profiled: record o.perf
// and save o.heap during this measurement.
func measure(ctx context.Context, o *options, dir, name string, rate int, profiled bool) (res *result, err error) {
	perf, heap, cpuprof := "", "", ""
	if profiled {
		perf, heap, cpuprof = o.perf, o.heap, o.cpuprof
	}
	res = &result{rate: rate, system: name, expected: int(math.Round(float64(rate) * o.duration.Seconds()))}
	for start := time.Now(); ; {
		res.busy = host.MachineBusy(o.busyProbe)
		if o.idleBelow <= 0 || res.busy < o.idleBelow || time.Since(start) > o.idleWait || ctx.Err() != nil {
			break
		}
	}
	res.load = host.Loadavg()
	mdir, err := os.MkdirTemp(dir, fmt.Sprintf("%s-%d-", name, rate))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.verbose, "callbench: %s at %d calls/s (%s)\n", name, rate, mdir)

	// The callee first: its address goes into the systems' configs.
	cp, err := freePorts(calleeIP, 1)
	if err != nil {
		return nil, err
	}
	callee := calleeIP + ":" + strconv.Itoa(cp[0])
	sys, err := startSystem(o, mdir, name, callee)
	if err != nil {
		return nil, err
	}
	defer sys.close()
	uasArgs := []string{"-sf", filepath.Join(dir, "uas.xml"), "-bind_local"}
	if o.trace {
		uasArgs = append(uasArgs, "-trace_msg", "-message_file", filepath.Join(mdir, "uas-messages.log"))
	}
	uas, err := startSIPp(o, mdir, "uas", calleeIP, cp[0], uasArgs...)
	if err != nil {
		return nil, err
	}
	defer uas.stop(5 * time.Second)

	var perfProc *proc
	if perf != "" && len(sys.single) > 0 {
		perfProc, err = startProc("perf", mdir, o.sippCPU, false, "perf", "record", "-g", "-F", "499",
			"-p", strconv.Itoa(sys.single[0].pid()), "-o", perf)
		if err != nil {
			return nil, err
		}
		res.note = "perf"
	}

	// The caller.
	up, err := freePorts("127.0.0.1", 1)
	if err != nil {
		return nil, err
	}
	timeout := o.duration + o.callLen + 60*time.Second
	cpu0, t0 := sys.cpu(), time.Now()
	uac, err := startSIPp(o, mdir, "uac", "127.0.0.1", up[0], "-sf", filepath.Join(dir, "uac.xml"),
		"-r", strconv.Itoa(rate), "-rp", "1000", "-m", strconv.Itoa(res.expected),
		"-d", strconv.FormatInt(o.callLen.Milliseconds(), 10),
		"-recv_timeout", "10000", "-timeout", strconv.Itoa(int(timeout.Seconds()))+"s", sys.target)
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout + 10*time.Second)
	defer deadline.Stop()
	var heapAt, cpuAt <-chan time.Time
	var cpuDone chan error // the CPU profile's fetch, once started
	if cpuprof != "" && sys.admin != "" {
		t := time.NewTimer(o.duration / 3)
		defer t.Stop()
		cpuAt = t.C
		defer func() {
			if cpuDone != nil && err == nil {
				if err = <-cpuDone; err != nil {
					err = fmt.Errorf("cpu profile: %w", err)
				}
			}
		}()
	}
	if heap != "" && sys.admin != "" {
		t := time.NewTimer(o.duration * 2 / 3)
		defer t.Stop()
		heapAt = t.C
	}
wait:
	for {
		select {
		case <-uac.done:
			break wait
		case <-tick.C:
			sys.sampleMemory()
		case <-cpuAt:
			cpuDone = make(chan error, 1)
			res.note += " cpuprofile"
			go func() {
				secs := max(1, int(o.duration.Seconds()/3))
				cpuDone <- fetch(sys.admin+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), cpuprof)
			}()
		case <-heapAt:
			// A gateway out of CPU may answer its admin server late: noted,
			// the measurement goes on.
			if err := saveHeap(sys.admin, heap); err != nil {
				fmt.Fprintf(o.verbose, "callbench: %v\n", err)
				res.note += " heap-failed"
			} else {
				res.note += " heap"
			}
		case <-deadline.C:
			uac.stop(time.Second)
			res.note += " caller-killed"
			break wait
		case <-ctx.Done():
			uac.stop(time.Second)
			return nil, ctx.Err()
		}
	}
	res.wall = time.Since(t0)
	if !sleep(ctx, o.settle) {
		return nil, ctx.Err()
	}
	sys.sampleMemory()
	res.sutCPU = sys.cpu() - cpu0
	res.sutProcs = sys.procs()
	res.peakMem = sys.peak
	if perfProc != nil {
		perfProc.signal(syscall.SIGINT)
		select {
		case <-perfProc.done:
		case <-time.After(30 * time.Second):
			perfProc.stop(time.Second)
		}
	}
	for _, p := range sys.all {
		if p.exited() {
			res.note += " " + p.name + "-exited"
		}
	}
	uas.stop(5 * time.Second)
	res.genCPU = float64(uac.cpu()+uas.cpu()) / float64(res.wall)

	st, err := readStats(filepath.Join(mdir, "uac.csv"))
	if err != nil {
		return nil, fmt.Errorf("caller statistics: %w; log:\n%s", err, uac.tail())
	}
	res.attempted, res.succeeded, res.failed = st.int("OutgoingCall(C)"), st.int("SuccessfulCall(C)"), st.int("FailedCall(C)")
	res.retrans = st.int("Retransmissions(C)")
	if ust, err := readStats(filepath.Join(mdir, "uas.csv")); err == nil {
		res.retrans += ust.int("Retransmissions(C)")
	}
	res.genRate = st.creationRate(res.attempted)
	res.setupP50, res.setupP99 = st.setupQuantile(0.5), st.setupQuantile(0.99)
	if res.attempted == 0 {
		res.note += " no-calls"
	}
	if !o.keep && res.pass() && !profiled {
		os.RemoveAll(mdir)
	}
	return res, nil
}

// startSIPp starts SIPp on ip:port (pinned to the SIPp core) with its
// statistics written every second into name.csv, and waits until its SIP
// socket is bound.
func startSIPp(o *options, dir, name, ip string, port int, args ...string) (*proc, error) {
	cp, err := freePorts("127.0.0.1", 1)
	if err != nil {
		return nil, err
	}
	mp, err := freeEvenRange(ip, 4)
	if err != nil {
		return nil, err
	}
	all := []string{"-i", ip, "-p", strconv.Itoa(port), "-nostdin", "-cp", strconv.Itoa(cp[0]),
		"-mp", strconv.Itoa(mp), "-buff_size", "4194304",
		"-trace_stat", "-stf", filepath.Join(dir, name+".csv"), "-fd", "1", "-trace_err", "-error_file", filepath.Join(dir, name+"-errors.log")}
	all = append(all, args...)
	p, err := startProc(name, dir, o.sippCPU, false, o.sipp, all...)
	if err != nil {
		return nil, err
	}
	err = waitReady(p, 10*time.Second, "SIP socket bound", func() error {
		if !udpBound(ip, port) {
			return errors.New("not bound")
		}
		return nil
	})
	if err != nil {
		p.stop(time.Second)
		return nil, err
	}
	return p, nil
}

// freeEvenRange returns an even port with n free consecutive ports on ip
// (SIPp's media ports).
func freeEvenRange(ip string, n int) (int, error) {
	for range 100 {
		p, err := freePort(ip)
		if err != nil {
			return 0, err
		}
		p &^= 1
		if p+n > 65535 {
			continue
		}
		ok := true
		for q := p; q < p+n && ok; q++ {
			ok = !udpBound(ip, q)
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("callbench: no %d free ports on %s", n, ip)
}

// stats is SIPp's -trace_stat file: a header row and one row per period;
// the last row holds the cumulative (C) counters at exit.
type stats struct {
	cols map[string]int
	rows [][]string
}

func readStats(path string) (*stats, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("%s: %d lines", path, len(lines))
	}
	s := &stats{cols: map[string]int{}}
	for i, h := range strings.Split(strings.TrimSuffix(lines[0], ";"), ";") {
		s.cols[h] = i
	}
	for _, l := range lines[1:] {
		s.rows = append(s.rows, strings.Split(l, ";"))
	}
	return s, nil
}

func (s *stats) get(row []string, col string) string {
	i, ok := s.cols[col]
	if !ok || i >= len(row) {
		return ""
	}
	return row[i]
}

// int returns a column of the last row.
func (s *stats) int(col string) int {
	n, _ := strconv.Atoi(s.get(s.rows[len(s.rows)-1], col))
	return n
}

// epoch returns the Unix time at the end of a time column
// ("2026-11-26\t10:07:48.587527\t1795687668.587527").
func epoch(v string) float64 {
	f := strings.Fields(v)
	if len(f) == 0 {
		return math.NaN()
	}
	t, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		return math.NaN()
	}
	return t
}

// creationRate returns the calls created per second until the period in
// which the last of total calls was created (1 s resolution: a slight
// underestimate).
func (s *stats) creationRate(total int) float64 {
	if total == 0 {
		return 0
	}
	start := epoch(s.get(s.rows[0], "StartTime"))
	for _, r := range s.rows {
		if n, _ := strconv.Atoi(s.get(r, "OutgoingCall(C)")); n >= total {
			return float64(total) / (epoch(s.get(r, "CurrentTime")) - start)
		}
	}
	return math.NaN()
}

// setupBounds are the upper bounds (ms) of SIPp's response time buckets
// (uac.xml's ResponseTimeRepartition), the last one open.
var setupBounds = []int{10, 20, 50, 100, 200, 500, 1000}

// setupQuantile returns the upper bound of the INVITE-to-200 time bucket
// holding quantile q (ms; +Inf: 1 s or more; NaN: no call).
func (s *stats) setupQuantile(q float64) float64 {
	last := s.rows[len(s.rows)-1]
	counts := make([]int, len(setupBounds)+1)
	total := 0
	for i, b := range setupBounds {
		counts[i], _ = strconv.Atoi(s.get(last, "ResponseTimeRepartition1_<"+strconv.Itoa(b)))
		total += counts[i]
	}
	counts[len(setupBounds)], _ = strconv.Atoi(s.get(last, "ResponseTimeRepartition1_>="+strconv.Itoa(setupBounds[len(setupBounds)-1])))
	total += counts[len(setupBounds)]
	if total == 0 {
		return math.NaN()
	}
	cum := 0
	for i, c := range counts {
		cum += c
		if float64(cum) >= q*float64(total) {
			if i == len(setupBounds) {
				return math.Inf(1)
			}
			return float64(setupBounds[i])
		}
	}
	return math.Inf(1)
}

// saveHeap writes the gateway's heap profile (served by its admin server
// with admin.pprof on, behind the token "callbench") into file and its
// metrics at the same moment into file.metrics.
func saveHeap(admin, file string) error {
	if err := fetch(admin+"/debug/pprof/heap", file); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := fetch(admin+"/metrics", file+".metrics"); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

func fetch(url, file string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer callbench")
	res, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return errors.New(res.Status)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}
