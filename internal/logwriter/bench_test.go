package logwriter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCallLine logs the b2bua's "call end" line through slog's JSON
// handler to a file opened like the benchmark harness's log (O_APPEND):
// straight (one write(2) per line, what the gateway did before) and
// through a Writer (with slog's handler or NewHandler, the daemon's
// chain). Besides ns/op (wall clock) it reports the process's
// CPU time per line (cpu-ns/op: user + system, including the Writer's
// timer goroutine) and write(2) calls per line (writes/op, from
// /proc/self/io's syscw).
//
//	go test -run - -bench CallLine -count 6 ./internal/logwriter/
func BenchmarkCallLine(b *testing.B) {
	for _, tc := range []struct {
		name     string
		buffered bool
		parallel bool
		fast     bool // NewHandler instead of slog.NewJSONHandler
	}{
		{"direct", false, false, false},
		{"logwriter", true, false, false},
		{"logwriter-fast", true, false, true},
		{"direct-parallel", false, true, false},
		{"logwriter-parallel", true, true, false},
		{"logwriter-fast-parallel", true, true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(b.TempDir(), "gateway.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var out io.Writer = f
			var w *Writer
			if tc.buffered {
				w = New(f, Options{})
				out = w
			}
			var h slog.Handler = slog.NewJSONHandler(out, nil)
			if tc.fast {
				h = NewHandler(out, true, nil)
			}
			if w != nil {
				h = w.Handler(h, slog.LevelWarn)
			}
			log := slog.New(h).With("subsystem", "sip")
			ctx := context.Background()
			callEnd := func() {
				log.LogAttrs(ctx, slog.LevelInfo, "call end",
					slog.String("call_id", "a84b4c76e66710@pc33.example.com"),
					slog.String("result", "answered"), slog.Int("code", 200),
					slog.String("duration", "1.002s"))
			}
			b.ReportAllocs()
			cpu0, w0 := cpuTime(b), writeCalls(b)
			if tc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						callEnd()
					}
				})
			} else {
				for b.Loop() {
					callEnd()
				}
			}
			if w != nil {
				w.Close()
			}
			n := float64(b.N)
			b.ReportMetric(float64(cpuTime(b)-cpu0)/n, "cpu-ns/op")
			b.ReportMetric(float64(writeCalls(b)-w0)/n, "writes/op")
		})
	}
}

// cpuTime is the process's user + system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeCalls is the process's write(2) count (syscw of /proc/self/io).
func writeCalls(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io")
	}
	for l := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(l, []byte("syscw: ")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Skip("no syscw in /proc/self/io")
	return 0
}
