package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/logwriter"
)

// processLog is the daemon's logger and what sits between it and stderr:
// with log.buffer (the default) an internal/logwriter.Writer that batches
// lines into few write(2)s; warn and error records are written through.
type processLog struct {
	log *slog.Logger
	// direct logs to the same output without the warn/error
	// write-through: its records are only appended to the buffer, so
	// logging there cannot block on the output (the second-signal path).
	direct *slog.Logger
	w      *logwriter.Writer // nil with log.buffer: false
}

// newLogger returns the process logger writing to w (stderr). Call close
// on every exit path.
func newLogger(cfg *config.Config, w io.Writer) *processLog {
	p := &processLog{}
	out := w
	if cfg.Log.Buffer {
		p.w = logwriter.New(w, logwriter.Options{})
		out = p.w
	}
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	// What slog's JSON/text handler would write, rendered with less work
	// for plain records (the call log lines).
	h := logwriter.NewHandler(out, cfg.Log.Format != "text", opts)
	p.direct = slog.New(h)
	if p.w != nil {
		h = p.w.Handler(h, slog.LevelWarn)
	}
	p.log = slog.New(h)
	return p
}

// close writes out what is buffered; it waits at most a second for a
// blocked stderr (logwriter.DefaultCloseWait).
func (p *processLog) close() {
	if p.w != nil {
		p.w.Close()
	}
}

// killed is the second-signal path: the process exits right after.
func (p *processLog) killed(sig os.Signal) {
	p.direct.Error("second signal: exiting without drain", "signal", sig.String())
	p.close()
}

// register adds cusax_log_dropped_lines_total to reg (always served; it
// stays 0 with log.buffer: false).
func (p *processLog) register(reg prometheus.Registerer) {
	const name, help = "cusax_log_dropped_lines_total",
		"Log lines lost: reason=full, dropped because stderr took none of the last 1 MiB of lines; reason=write_error, in writes to stderr that failed."
	stat := func(f func(logwriter.Stats) uint64) func() float64 {
		return func() float64 {
			if p.w == nil {
				return 0
			}
			return float64(f(p.w.Stats()))
		}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": "full"}},
			stat(func(s logwriter.Stats) uint64 { return s.DroppedFull })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": "write_error"}},
			stat(func(s logwriter.Stats) uint64 { return s.DroppedError })),
	)
}
