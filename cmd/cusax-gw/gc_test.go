package main

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/cusax-gw/cusax-gw/internal/config"
)

func TestTuneGC(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	defer func() {
		debug.SetGCPercent(oldGC)
		debug.SetMemoryLimit(oldLimit)
	}()
	log := slog.New(slog.DiscardHandler)
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	tuneGC(config.Runtime{GCPercent: 150, MemoryLimit: 1 << 30}, getenv, log)
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("runtime.gc_percent 150: GOGC = %d, want 150", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != 1<<30 {
		t.Errorf("runtime.memory_limit 1 GiB: GOMEMLIMIT = %d, want %d", got, 1<<30)
	}

	// The environment variables win (the runtime applied them at start).
	env["GOGC"], env["GOMEMLIMIT"] = "300", "2GiB"
	tuneGC(config.Runtime{GCPercent: 150, MemoryLimit: 1 << 30}, getenv, log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set: GOGC = %d, want 100 (untouched)", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set: GOMEMLIMIT = %d, want untouched", got)
	}
}
