package rtprelay

import (
	"context"
	"flag"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

var heapProfile = flag.String("heapprofile", "", "BenchmarkCallMemory: write a heap profile with the calls set up to this file (+ engine and call count); use with -memprofilerate=1")

// memSample is the process's memory by class, in bytes.
type memSample struct {
	live, stacks, other, rss int64
}

func sampleMem(t testing.TB) memSample {
	runtime.GC()
	runtime.GC() // the second cycle's mark sees what the first freed
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/other:bytes"},
	}
	metrics.Read(s)
	m := memSample{live: int64(s[0].Value.Uint64()), stacks: int64(s[1].Value.Uint64()), other: int64(s[2].Value.Uint64())}
	b, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			m.rss = pages * int64(os.Getpagesize())
		}
	}
	return m
}

// BenchmarkCallMemory sets up calls (one audio stream each: four sockets)
// through Offer and Answer as the b2bua does and reports what they keep,
// per call: live heap (after GC), goroutine stacks, runtime-internal
// memory ("other": poll descriptors among it) and process RSS growth. The
// kernel's socket memory is not in RSS and not counted.
func BenchmarkCallMemory(b *testing.B) {
	for _, e := range engines {
		for _, calls := range []int{1000, 2000} {
			b.Run(e+"/calls="+strconv.Itoa(calls), func(b *testing.B) { benchmarkCallMemory(b, e, calls) })
		}
	}
}

func benchmarkCallMemory(b *testing.B, engine string, calls int) {
	min, max := freeRange(b, calls*4+40)
	r, _, _ := testRelay(b, Config{PortMin: min, PortMax: max, Engine: engine, Quarantine: time.Nanosecond})
	runRelay(b, r)
	ctx := context.Background()
	ids := make([]string, calls)
	for i := range ids {
		ids[i] = "call-" + strconv.Itoa(i) + "@bench/as7f3k"
	}
	offer, answer := phoneSDP(4000), phoneSDP(5000)
	setup := func() {
		for _, id := range ids {
			if _, err := r.Offer(ctx, id, "a", offer); err != nil {
				b.Fatal(err)
			}
			if _, err := r.Answer(ctx, id, "b", answer); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Warm up: the engine's workers, the maps at full size.
	setup()
	for _, id := range ids {
		r.Delete(id)
	}
	var d memSample
	n := 0
	for b.Loop() {
		before := sampleMem(b)
		setup()
		after := sampleMem(b)
		if *heapProfile != "" && n == 0 {
			f, err := os.Create(*heapProfile + "." + engine + "." + strconv.Itoa(calls))
			if err != nil {
				b.Fatal(err)
			}
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		d.live += after.live - before.live
		d.stacks += after.stacks - before.stacks
		d.other += after.other - before.other
		d.rss += after.rss - before.rss
		n++
		for _, id := range ids {
			r.Delete(id)
		}
	}
	per := func(v int64) float64 { return float64(v) / float64(n*calls) }
	b.ReportMetric(per(d.live), "heap-B/call")
	b.ReportMetric(per(d.stacks), "stack-B/call")
	b.ReportMetric(per(d.other), "other-B/call")
	b.ReportMetric(per(d.rss), "rss-B/call")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCallSetup is the relay's signalling cost per call: Offer, Answer
// and Delete of a call with one audio stream (four sockets), as the b2bua
// makes them. Freed ports leave quarantine after 1 ms, so the pool cycles
// through a small range. epoll-cold keeps no freed pair bound (a pool at
// its descriptor budget, as at high call rates): every call binds and
// closes its four sockets. live=N holds N other calls (4N descriptors,
// 2N pairs of the range) set up meanwhile, as a gateway at a high call
// rate does: at 2,000 1-s calls/s about 2,200 calls are live and the
// budget leaves room for ~8 % of the freed pairs to be reused warm, so its
// cost per call is about 0.08 x epoll/live + 0.92 x epoll-cold/live.
func BenchmarkCallSetup(b *testing.B) {
	cases := []string{"epoll/live=2000", "epoll-cold/live=2000"}
	for _, e := range append(slices.Clip(engines), append([]string{"epoll-cold"}, cases...)...) {
		b.Run(e, func(b *testing.B) {
			e, l, _ := strings.Cut(e, "/live=")
			live, _ := strconv.Atoi(l)
			engine, cold := strings.CutSuffix(e, "-cold")
			if cold && !rawSupported {
				b.Skip("raw sockets need Linux")
			}
			min, max := freeRange(b, 4000+4*live)
			r, _, _ := testRelay(b, Config{PortMin: min, PortMax: max, Engine: engine, Quarantine: time.Millisecond})
			if cold {
				r.pool.fdBudget = 0
			}
			runRelay(b, r)
			ctx := context.Background()
			offer, answer := phoneSDP(4000), phoneSDP(5000)
			for i := range live {
				id := "live-" + strconv.Itoa(i) + "@bench/as7f3k"
				if _, err := r.Offer(ctx, id, "a", offer); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Answer(ctx, id, "b", answer); err != nil {
					b.Fatal(err)
				}
			}
			id := "call@bench/as7f3k"
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Offer(ctx, id, "a", offer); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Answer(ctx, id, "b", answer); err != nil {
					b.Fatal(err)
				}
				if err := r.Delete(id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestEndpointSize: an endpoint (two per anchored stream, the largest part
// of a call's memory) stays within the 320-byte allocation size class, its
// learn state (one per endpoint and signalling event) within 80.
func TestEndpointSize(t *testing.T) {
	if n := unsafe.Sizeof(endpoint{}); n > 320 {
		t.Errorf("endpoint is %d bytes, want <= 320 (the next size class is 352)", n)
	}
	if unsafe.Offsetof(endpoint{}.rtcp) != unsafe.Offsetof(endpoint{}.rtp)+unsafe.Sizeof(sock{}) {
		t.Error("endpoint.rtcp does not directly follow endpoint.rtp (sock.endpoint relies on it)")
	}
	if n := unsafe.Sizeof(stream{}); n > 32 {
		t.Errorf("stream is %d bytes, want <= 32 (the next size class is 48)", n)
	}
	if n := unsafe.Sizeof(learnState{}); n > 80 {
		t.Errorf("learnState is %d bytes, want <= 80 (the next size class is 96)", n)
	}
}
