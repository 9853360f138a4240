//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"slices"
)

var nan = math.NaN()

// median of the values that are not NaN; NaN when there are none.
func median(v []float64) float64 {
	v = slices.DeleteFunc(slices.Clone(v), math.IsNaN)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if n := len(v); n%2 == 1 {
		return v[n/2]
	} else {
		return (v[n/2-1] + v[n/2]) / 2
	}
}

func maxOf(v []float64) float64 {
	v = slices.DeleteFunc(slices.Clone(v), math.IsNaN)
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Max(v)
}

type summary struct {
	delivered, loss, p50, p99, cpu, rss, drss, drssGC, mrss, mrssGC, ratio []float64
}

func (s *summary) add(r *result, rtpe *result) {
	s.delivered = append(s.delivered, r.delivered)
	s.loss = append(s.loss, r.loss)
	s.p50 = append(s.p50, r.p50)
	s.p99 = append(s.p99, r.p99)
	s.cpu = append(s.cpu, r.cpuPerPkt)
	rss := math.NaN()
	if r.rss != 0 {
		rss = float64(r.rss)
	}
	s.rss = append(s.rss, rss)
	s.drss = append(s.drss, r.drssPer1k())
	s.drssGC = append(s.drssGC, r.drssGCPer1k())
	s.mrss = append(s.mrss, r.mrss)
	s.mrssGC = append(s.mrssGC, r.mrssGC)
	ratio := math.NaN()
	if rtpe != nil && rtpe.cpuPerPkt > 0 {
		ratio = r.cpuPerPkt / rtpe.cpuPerPkt
	}
	s.ratio = append(s.ratio, ratio)
}

// summarize prints medians over the runs, the ratio to rtpengine (median of
// the per-run ratios: each run measures both back to back), the targets of
// issue 5, and last the ratio line.
func summarize(w io.Writer, o *options, results []*result) error {
	type key struct {
		streams int
		system  string
	}
	find := func(run, streams int, system string) *result {
		for _, r := range results {
			if r.run == run && r.streams == streams && r.system == system {
				return r
			}
		}
		return nil
	}
	sums := map[key]*summary{}
	for _, r := range results {
		k := key{r.streams, r.system}
		if sums[k] == nil {
			sums[k] = &summary{}
		}
		sums[k].add(r, find(r.run, r.streams, "rtpengine"))
	}

	fmt.Fprintf(w, "\n# summary over %d run(s): medians; loss and p99_max are the worst run; ratio = cpu_us/p / rtpengine's in the same run (median)\n", o.runs)
	fmt.Fprintf(w, "%-6s %-9s %9s %9s %7s %7s %8s %8s %9s %9s %7s %8s %7s %7s\n",
		"load", "system", "deliv_pps", "loss%max", "p50_us", "p99_us", "p99_max", "cpu_us/p", "rss_MB", "dRSS/1k", "dRSSgc", "mRSS/1k", "mRSSgc", "ratio")
	for _, streams := range o.loads {
		for _, sys := range o.systems {
			s := sums[key{streams, sys}]
			if s == nil {
				continue
			}
			fmt.Fprintf(w, "%-6d %-9s %9.0f %9.4f %7.0f %7.0f %8.0f %8.2f %9.1f %9.2f %7.2f %8.2f %7.2f %7.3f\n",
				streams, sys, median(s.delivered), 100*maxOf(s.loss), median(s.p50), median(s.p99), maxOf(s.p99),
				median(s.cpu), median(s.rss)/1e6, median(s.drss)/1e6, median(s.drssGC)/1e6, median(s.mrss)/1e6, median(s.mrssGC)/1e6, median(s.ratio))
		}
	}

	// The load closest to 50,000 packets/s (1,000 streams) and the largest
	// load up to 100,000 packets/s (2,000 streams, 1,000 calls).
	l50, lmax := o.loads[0], 0
	for _, l := range o.loads {
		if abs(l-1000) < abs(l50-1000) {
			l50 = l
		}
		if l <= 2000 && l > lmax {
			lmax = l
		}
	}
	get := func(streams int, sys string) *summary {
		if s := sums[key{streams, sys}]; s != nil {
			return s
		}
		return &summary{}
	}
	verdict := func(ok bool, v float64) string {
		switch {
		case math.IsNaN(v):
			return "not measured"
		case ok:
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(w, "\n# targets (issue 5); default engine %s\n", o.engine)
	for _, eng := range []string{"goroutine", "epoll"} {
		if !slices.Contains(o.systems, eng) {
			continue
		}
		r := median(get(l50, eng).ratio)
		fmt.Fprintf(w, "target cpu/packet <= 0.8 x rtpengine at %d pps, %s: %.3f x  %s\n", l50*50, eng, r, verdict(r <= 0.8, r))
		var worst float64
		for _, l := range o.loads {
			if l <= 2000 {
				worst = max(worst, maxOf(get(l, eng).loss))
			}
		}
		fmt.Fprintf(w, "target 0 loss up to %d pps on one core, %s: worst %.4f%%  %s\n", lmax*50, eng, 100*worst, verdict(worst == 0, worst))
		p99 := median(get(l50, eng).p99)
		fmt.Fprintf(w, "target p99 added latency < 1 ms at %d pps, %s: %.0f us (worst run %.0f us)  %s\n",
			l50*50, eng, p99, maxOf(get(l50, eng).p99), verdict(p99 < 1000, p99))
	}
	if slices.Contains(o.systems, "epoll") {
		// Two figures: the marginal cost at scale (what a running
		// gateway pays per 1,000 more calls; the verdict) and the growth
		// from the idle process, which also holds the Go runtime's fixed
		// floor and what the first calls' garbage left behind.
		s := get(lmax, "epoll")
		d, m := median(s.drss), median(s.mrss)
		if o.marginal > 0 {
			base := max(lmax/2, o.marginal)
			fmt.Fprintf(w, "target RSS < 2 MB per 1,000 calls, epoll, verdict on the marginal figure (mRSS/1k, RSS at %d minus at %d calls, same process): %.2f MB per 1,000 calls (%.2f MB after FreeOSMemory)  %s\n",
				base+o.marginal, base, m/1e6, median(s.mrssGC)/1e6, verdict(m < 2e6, m))
		}
		fmt.Fprintf(w, "target RSS < 2 MB per 1,000 calls, epoll, from the idle process (dRSS/1k, %d calls; includes the runtime's fixed floor): %.2f MB per 1,000 calls (%.2f MB after FreeOSMemory; RSS %.1f MB in all)  %s\n",
			lmax/2, d/1e6, median(s.drssGC)/1e6, median(s.rss)/1e6, verdict(d < 2e6, d))
	}
	if slices.Contains(o.systems, "direct") {
		fmt.Fprintf(w, "harness ceiling (direct, no relay) at %d pps: loss worst %.4f%%, p99 %.0f us\n",
			lmax*50, 100*maxOf(get(lmax, "direct").loss), median(get(lmax, "direct").p99))
	}
	fmt.Fprintf(w, "relay_cpu_per_packet_ratio_vs_rtpengine=%.3f\n", median(get(l50, o.engine).ratio))
	return nil
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
