// Package logwriter buffers the process log between log/slog's handler and
// its output (stderr: a journald stream or a file), so that the gateway
// makes one write(2) per batch of lines instead of one per line.
//
// What operators can rely on:
//
//   - Each Write (one log record: slog's handlers write a record with one
//     Write call, newline included) reaches the output whole, in one
//     write(2) with the records before and after it; records are never
//     split or interleaved.
//   - A record is handed to the output at most Delay (100 ms) after it was
//     written, or at once when the buffer holds FlushAt (64 KiB) — unless
//     the output itself is slower than that (see the next point).
//   - Warn and Error records are written through: Handler wraps a
//     slog.Handler so that such a record, and every record before it, is on
//     the output when the logging call returns (unless another goroutine is
//     writing to the output at that moment: then they are written right
//     after that write, without waiting for the timer). Such a call makes
//     at most one write; what piles up meanwhile goes out from the timer's
//     goroutine.
//   - Close writes out everything buffered (every exit path of `cusax-gw
//     run` calls it), waiting at most CloseWait for a blocked output.
//   - A crash the process cannot run code after (an unrecovered panic in a
//     goroutine other than the one that calls Close, a fatal runtime
//     error, SIGKILL) loses the Info and Debug records still buffered:
//     those of the last Delay while the output keeps up, at most Limit
//     bytes plus the batch in flight; Warn and Error records are already
//     out.
//   - The output never blocks the daemon: writes happen on a timer
//     goroutine (or in a Warn/Error logging call, see above: at most one
//     goroutine ever waits in the output), and while a write is in flight
//     records are appended to the buffer; when the buffer reaches Limit
//     (1 MiB) new records are dropped and counted (Stats.DroppedFull), as
//     Kamailio and rsyslog drop rather than stall call processing.
//   - A failing output (EPIPE, ENOSPC) costs one failed write(2) per flush;
//     the records of that write are counted (Stats.DroppedError) and the
//     next flush tries again. When a failed write left a line half-written,
//     the next write starts with a newline so that later lines stay whole.
//
// Memory is bounded by two buffers holding at most Limit (+ one record)
// each; they keep their capacity after a burst (at most 2×Limit each), so
// that a steady log rate allocates nothing.
// The Writer starts no goroutine of its own: its flushes run in the
// goroutines of a time.AfterFunc timer, which Close stops.
package logwriter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultDelay     = 100 * time.Millisecond
	DefaultFlushAt   = 64 << 10
	DefaultLimit     = 1 << 20
	DefaultCloseWait = time.Second
)

// Options tune a Writer; zero fields take the defaults above.
type Options struct {
	// Delay bounds how long a record waits in the buffer.
	Delay time.Duration
	// FlushAt is the buffered size (bytes) that triggers a write at once.
	FlushAt int
	// Limit is the buffered size (bytes, at least FlushAt) above which new
	// records are dropped while the output has not taken the previous batch.
	Limit int
	// CloseWait bounds how long Close waits for a write in flight.
	CloseWait time.Duration
}

// Stats are the Writer's counters since New.
type Stats struct {
	Records      uint64 // records handed to the output (in successful writes)
	Writes       uint64 // write calls on the output
	DroppedFull  uint64 // records dropped because the buffer was at Limit
	DroppedError uint64 // records lost in writes that failed
}

// Writer is a buffered, line-preserving io.Writer for a process log. It is
// safe for concurrent use. Its Write never blocks on the output and never
// returns an error (failures are counted in Stats).
type Writer struct {
	out       io.Writer
	delay     time.Duration
	flushAt   int
	limit     int
	closeWait time.Duration
	timer     *time.Timer

	mu      sync.Mutex
	buf     []byte // records waiting for the output
	nbuf    int    // records in buf
	spare   []byte // the other buffer, nil while a write holds it
	writing bool   // a goroutine is writing to out (outside mu)
	armed   bool   // the timer will fire (or its function is about to run)
	urgent  bool   // the writer should go round again at once
	closed  bool
	midLine bool          // a failed write stopped inside a line
	idle    chan struct{} // closed when the current writing ends (Close waits on it)

	records, writes, droppedFull, droppedError atomic.Uint64
}

// New returns a Writer that writes to out. Close it when done.
func New(out io.Writer, o Options) *Writer {
	if o.Delay <= 0 {
		o.Delay = DefaultDelay
	}
	if o.FlushAt <= 0 {
		o.FlushAt = DefaultFlushAt
	}
	if o.Limit <= 0 {
		o.Limit = DefaultLimit
	}
	o.Limit = max(o.Limit, o.FlushAt)
	if o.CloseWait <= 0 {
		o.CloseWait = DefaultCloseWait
	}
	w := &Writer{out: out, delay: o.Delay, flushAt: o.FlushAt, limit: o.Limit, closeWait: o.CloseWait}
	w.buf = make([]byte, 0, 2*w.flushAt)
	w.spare = make([]byte, 0, 2*w.flushAt)
	w.timer = time.AfterFunc(time.Hour, w.fire)
	w.timer.Stop()
	return w
}

// Write buffers p, one record, whole. It returns len(p), nil, also when
// it drops p because the buffer is full (counted in Stats.DroppedFull).
// After Close it writes p through at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.buf) > 0 && len(w.buf)+len(p) > w.limit {
		w.mu.Unlock()
		w.droppedFull.Add(1)
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	w.nbuf++
	switch {
	case w.closed:
		w.flushLocked(false)
	case w.writing:
		// The writer goes round again when the buffer is at FlushAt;
		// otherwise the timer (armed below if not yet) bounds the delay.
		if !w.armed && len(w.buf) < w.flushAt {
			w.arm(w.delay)
		}
	case len(w.buf) >= w.flushAt:
		// Write from the timer's goroutine, not from this caller: slog's
		// handler holds its own lock around Write, and a slow output
		// would hold every logging goroutine behind it.
		w.arm(0)
	case !w.armed:
		w.arm(w.delay)
	}
	w.mu.Unlock()
	return len(p), nil
}

// arm schedules fire after d. Called with mu held.
func (w *Writer) arm(d time.Duration) {
	w.armed = true
	w.timer.Reset(d)
}

// fire runs in the timer's goroutine.
func (w *Writer) fire() {
	w.mu.Lock()
	w.armed = false
	w.flushLocked(true)
	w.mu.Unlock()
}

// Flush writes every buffered record to the output from the calling
// goroutine (one write; records added meanwhile that are due go out from
// the timer's goroutine), unless another goroutine is writing: then they
// are written right after that write and Flush returns at once.
func (w *Writer) Flush() {
	w.mu.Lock()
	w.flushLocked(false)
	w.mu.Unlock()
}

func (w *Writer) flushLocked(background bool) {
	if len(w.buf) == 0 {
		return
	}
	if w.writing {
		w.urgent = true
		return
	}
	w.writeOut(background)
}

// writeOut writes the buffer to out until nothing urgent is left, or
// (background false: called by a logging goroutine) once, handing what is
// urgent to the timer's goroutine. Called with mu held and writing false;
// it releases mu around each write.
func (w *Writer) writeOut(background bool) {
	w.writing = true
	for len(w.buf) > 0 {
		b, n := w.buf, w.nbuf
		w.buf, w.nbuf, w.spare = w.spare, 0, nil
		if w.buf == nil {
			w.buf = make([]byte, 0, 2*w.flushAt)
		}
		w.urgent = false
		if w.armed && w.timer.Stop() {
			w.armed = false // the records it was armed for are in b
		}
		fix := w.midLine
		w.mu.Unlock()
		failed := w.write(b, n, fix)
		w.mu.Lock()
		w.midLine = failed
		if cap(b) <= 2*w.limit {
			w.spare = b[:0]
		}
		if len(w.buf) == 0 || w.closed {
			continue // closed: write everything now (Close waits for it)
		}
		if !w.urgent && len(w.buf) < w.flushAt {
			break // what is left waits for the armed timer
		}
		if !background {
			// A logging goroutine (Flush) writes once; the timer's
			// goroutine takes the rest at once.
			w.arm(0)
			break
		}
	}
	if w.spare == nil {
		w.spare = make([]byte, 0, 2*w.flushAt)
	}
	w.writing = false
	if w.idle != nil {
		close(w.idle)
		w.idle = nil
	}
}

// write hands b (n records) to out; fix first ends the line a failed write
// left half-written. It reports whether b ended up half-written.
func (w *Writer) write(b []byte, n int, fix bool) (midLine bool) {
	if fix {
		w.writes.Add(1)
		if _, err := w.out.Write([]byte{'\n'}); err != nil {
			w.droppedError.Add(uint64(n))
			return true
		}
	}
	w.writes.Add(1)
	m, err := w.out.Write(b)
	if err == nil && m == len(b) {
		w.records.Add(uint64(n))
		return false
	}
	m = min(max(m, 0), len(b))
	lost := bytes.Count(b[m:], []byte{'\n'})
	if b[len(b)-1] != '\n' {
		lost++
	}
	lost = min(lost, n)
	w.records.Add(uint64(n - lost))
	w.droppedError.Add(uint64(lost))
	return m > 0 && b[m-1] != '\n'
}

// Close writes out everything buffered and stops the timer; it waits at
// most Options.CloseWait for a write in flight (a blocked output), then
// returns. Writes after Close go straight through. Close is idempotent
// and always returns nil.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	if w.armed && w.timer.Stop() {
		w.armed = false
	}
	if !w.writing && len(w.buf) == 0 {
		w.mu.Unlock()
		return nil
	}
	// Write from the timer's goroutine (or let the writer in flight go
	// round again) so that a blocked output cannot hold Close.
	if w.writing {
		w.urgent = true
	} else {
		w.arm(0)
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	t := time.NewTimer(w.closeWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
	return nil
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	return Stats{
		Records:      w.records.Load(),
		Writes:       w.writes.Load(),
		DroppedFull:  w.droppedFull.Load(),
		DroppedError: w.droppedError.Load(),
	}
}

// Handler wraps h (which writes to w) so that records at level or above
// are flushed to the output, with everything before them, before the
// logging call returns (see Flush).
func (w *Writer) Handler(h slog.Handler, level slog.Leveler) slog.Handler {
	return flushHandler{Handler: h, w: w, level: level}
}

type flushHandler struct {
	slog.Handler
	w     *Writer
	level slog.Leveler
}

func (f flushHandler) Handle(ctx context.Context, r slog.Record) error {
	err := f.Handler.Handle(ctx, r)
	if r.Level >= f.level.Level() {
		f.w.Flush()
	}
	return err
}

func (f flushHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return flushHandler{Handler: f.Handler.WithAttrs(as), w: f.w, level: f.level}
}

func (f flushHandler) WithGroup(name string) slog.Handler {
	return flushHandler{Handler: f.Handler.WithGroup(name), w: f.w, level: f.level}
}
