package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cusax-gw/cusax-gw/internal/config"
)

// TestProcessLogBuffered: with log.buffer (the default) Info lines wait
// (at most 100 ms on synctest's clock), a Warn line takes them out at
// once, and the second-signal path logs the signal and writes out the
// rest.
func TestProcessLogBuffered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		out := &lockedWriter{w: &buf}
		read := func() string { out.mu.Lock(); defer out.mu.Unlock(); return buf.String() }
		cfg := config.Default()
		p := newLogger(cfg, out)
		defer p.close()
		p.log.Info("call start", "call_id", "c1")
		synctest.Wait()
		if got := read(); got != "" {
			t.Fatalf("log right after an Info line = %q, want it buffered", got)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := read(); !strings.Contains(got, `"msg":"call start"`) {
			t.Fatalf("log 100 ms after an Info line = %q, want the line", got)
		}
		p.log.Info("call end", "call_id", "c1")
		p.log.With("subsystem", "sip").Warn("no rtp ports", "call_id", "c2")
		if got := read(); !strings.Contains(got, `"msg":"call end"`) || !strings.Contains(got, `"msg":"no rtp ports"`) {
			t.Fatalf("log right after a Warn line = %q, want it and the Info line before it", got)
		}
		p.log.Info("shutting down")
		p.killed(syscall.SIGTERM)
		got := read()
		if !strings.Contains(got, `"msg":"shutting down"`) ||
			!strings.Contains(got, `"msg":"second signal: exiting without drain","signal":"terminated"`) {
			t.Fatalf("log after the second signal = %q, want the buffered line and the signal", got)
		}
		if n := strings.Count(got, "\n"); n != 5 {
			t.Errorf("log has %d lines, want 5:\n%s", n, got)
		}
	})
}

// TestProcessLogUnbuffered: log.buffer: false writes each line at once.
func TestProcessLogUnbuffered(t *testing.T) {
	var buf bytes.Buffer
	cfg := config.Default()
	cfg.Log.Buffer, cfg.Log.Format = false, "text"
	p := newLogger(cfg, &buf)
	defer p.close()
	p.log.Info("call start")
	if !strings.Contains(buf.String(), `msg="call start"`) {
		t.Fatalf("log = %q, want the line at once", buf.String())
	}
}

// TestLogMetrics: cusax_log_dropped_lines_total is served with both
// reasons from the start, buffered or not.
func TestLogMetrics(t *testing.T) {
	for _, buffer := range []bool{true, false} {
		cfg := config.Default()
		cfg.Log.Buffer = buffer
		p := newLogger(cfg, &bytes.Buffer{})
		reg := prometheus.NewRegistry()
		p.register(reg)
		want := `
# HELP cusax_log_dropped_lines_total Log lines lost: reason=full, dropped because stderr took none of the last 1 MiB of lines; reason=write_error, in writes to stderr that failed.
# TYPE cusax_log_dropped_lines_total counter
cusax_log_dropped_lines_total{reason="full"} 0
cusax_log_dropped_lines_total{reason="write_error"} 0
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
			t.Errorf("log.buffer %v: %v", buffer, err)
		}
		if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
			t.Errorf("lint: %v %v", probs, err)
		}
		p.close()
	}
}

// TestLogMetricsCountErrors: lines lost in failed writes are counted.
func TestLogMetricsCountErrors(t *testing.T) {
	p := newLogger(config.Default(), failWriter{})
	reg := prometheus.NewRegistry()
	p.register(reg)
	p.log.Info("a")
	p.log.Warn("b") // written through: both lines fail
	p.close()
	if got := droppedLines(t, reg, "write_error"); got != 2 {
		t.Errorf(`cusax_log_dropped_lines_total{reason="write_error"} = %v, want 2`, got)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// droppedLines reads cusax_log_dropped_lines_total{reason=reason}.
func droppedLines(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "cusax_log_dropped_lines_total" && l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series with reason %q", reason)
	return 0
}

// TestOnKill: the function registered runs on the second signal until it
// is unregistered; without signalContext's context nothing is registered.
func TestOnKill(t *testing.T) {
	k := new(killHook)
	ctx := context.WithValue(context.Background(), killHookKey{}, k)
	var got os.Signal
	unregister := onKill(ctx, func(sig os.Signal) { got = sig })
	if !k.run(syscall.SIGTERM) || got != syscall.SIGTERM {
		t.Fatalf("run with a hook: got %v, want SIGTERM passed to it", got)
	}
	unregister()
	if k.run(syscall.SIGINT) {
		t.Error("run after unregister = true, want false (main prints the line itself)")
	}
	onKill(context.Background(), func(os.Signal) { t.Error("called") })()
}
