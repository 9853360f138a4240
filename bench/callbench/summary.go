//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"slices"
)

// The targets on this 2-core machine.
const (
	targetCPS = 2000
	targetRSS = 400e6
)

// summarize prints per system and rate the pass count, the sums of calls,
// median CPU per call and the worst peak memory; then the failure point of
// each system, the targets and the machine-readable last line.
func summarize(w io.Writer, o *options, results []*result) error {
	fmt.Fprintf(w, "\n# summary over %d run(s): pass = runs in which every call succeeded; calls summed over the runs; cpu_ms/call median; peak_MB the worst run\n", o.runs)
	fmt.Fprintf(w, "%-8s %-5s %-5s %9s %9s %7s %8s %8s %7s\n", "system", "rate", "pass", "attempted", "succeeded", "failed", "cpu_ms/c", "peak_MB", "p99_ms")
	maxCPS := map[string]int{}
	peakAt := map[string]map[int]float64{}
	cpuAt := map[string]map[int]float64{}
	for _, sys := range o.systems {
		peakAt[sys], cpuAt[sys] = map[int]float64{}, map[int]float64{}
		for _, rate := range o.rates {
			var n, pass, att, ok, failed int
			var cpus []float64
			peak, p99 := 0.0, 0.0
			for _, r := range results {
				if r.system != sys || r.rate != rate {
					continue
				}
				n++
				if r.pass() {
					pass++
				}
				att, ok, failed = att+r.attempted, ok+r.succeeded, failed+r.failed
				cpus = append(cpus, r.cpuPerCall())
				peak = max(peak, float64(r.peakMem)/1e6)
				p99 = max(p99, r.setupP99)
			}
			if n == 0 {
				continue
			}
			if pass == n && rate > maxCPS[sys] {
				maxCPS[sys] = rate
			}
			peakAt[sys][rate], cpuAt[sys][rate] = peak, median(cpus)
			fmt.Fprintf(w, "%-8s %-5d %d/%-3d %9d %9d %7d %8.3f %8.1f %7.0f\n", sys, rate, pass, n, att, ok, failed, median(cpus), peak, p99)
		}
	}

	fmt.Fprintf(w, "\n# failure point: the highest rate at which every run passed\n")
	for _, sys := range o.systems {
		m := maxCPS[sys]
		line := fmt.Sprintf("%s: %d calls/s", sys, m)
		if m > 0 && sys != sysDirect {
			line += fmt.Sprintf(" (cpu %.3f ms/call, peak %.1f MB)", cpuAt[sys][m], peakAt[sys][m])
		}
		fmt.Fprintln(w, line)
	}
	if slices.Contains(o.systems, sysGateway) {
		g := maxCPS[sysGateway]
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "MISSED"
		}
		fmt.Fprintf(w, "target >= %d calls/s with 0 failures: gateway %d calls/s  %s\n", targetCPS, g, verdict(g >= targetCPS))
		if p, ok := peakAt[sysGateway][targetCPS]; ok {
			fmt.Fprintf(w, "target RSS < %.0f MB at %d calls/s: gateway peak %.1f MB  %s (calls placed for %v; finished transactions linger sip.transaction_linger, 2 s by default, plus the 1-s calls: windows under ~5 s understate the steady state)\n",
				targetRSS/1e6, targetCPS, p, verdict(p*1e6 < targetRSS), o.duration)
		}
		if slices.Contains(o.systems, sysKamailio) {
			k := maxCPS[sysKamailio]
			fmt.Fprintf(w, "target >= Kamailio + rtpengine: gateway %d, kamailio+rtpengine %d  %s\n", g, k, verdict(g >= k))
		}
	}
	fmt.Fprintf(w, "gateway_max_cps=%d kamailio_rtpengine_max_cps=%d sipp_direct_max_cps=%d\n",
		maxCPS[sysGateway], maxCPS[sysKamailio], maxCPS[sysDirect])
	return nil
}

// median of the non-NaN values; NaN when there are none.
func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
