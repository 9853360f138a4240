package logwriter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink is an output that records every write; it can be made to block
// (gate) or fail (fail).
type sink struct {
	mu     sync.Mutex
	writes [][]byte
	fail   func(b []byte) (int, error) // nil: accept
	gate   chan struct{}               // non-nil: each write waits for a receive... a value
	inside chan struct{}               // non-nil: a write signals it entered
}

func (s *sink) Write(b []byte) (int, error) {
	if s.inside != nil {
		s.inside <- struct{}{}
	}
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		n, err := s.fail(b)
		s.writes = append(s.writes, bytes.Clone(b[:n]))
		return n, err
	}
	s.writes = append(s.writes, bytes.Clone(b))
	return len(b), nil
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(bytes.Join(s.writes, nil))
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

func line(i int) []byte { return fmt.Appendf(nil, "{\"msg\":\"line\",\"n\":%d}\n", i) }

// TestDelayBound: a record waits at most Delay, measured on synctest's
// fake clock; records within one Delay go out in one write.
func TestDelayBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{Delay: 100 * time.Millisecond})
		defer w.Close()
		w.Write(line(1))
		time.Sleep(60 * time.Millisecond)
		w.Write(line(2))
		synctest.Wait()
		if n := out.count(); n != 0 {
			t.Fatalf("writes after 60 ms = %d, want 0 (buffered)", n)
		}
		time.Sleep(40*time.Millisecond - time.Nanosecond)
		synctest.Wait()
		if n := out.count(); n != 0 {
			t.Fatalf("writes 1 ns before the delay = %d, want 0", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got, want := out.String(), string(line(1))+string(line(2)); got != want || out.count() != 1 {
			t.Fatalf("output at the delay = %q in %d writes, want %q in 1", got, out.count(), want)
		}
		// The next record starts a new delay.
		w.Write(line(3))
		time.Sleep(99 * time.Millisecond)
		synctest.Wait()
		if n := out.count(); n != 1 {
			t.Fatalf("writes 99 ms after the third record = %d, want 1", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := out.count(); n != 2 {
			t.Fatalf("writes 100 ms after the third record = %d, want 2", n)
		}
		if s := w.Stats(); s.Records != 3 || s.Writes != 2 {
			t.Errorf("Stats = %+v, want 3 records in 2 writes", s)
		}
	})
}

// TestFlushAt: a full buffer goes out without waiting for the delay.
func TestFlushAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{Delay: time.Hour, FlushAt: 100})
		defer w.Close()
		var want []byte
		for i := 0; len(want) < 100; i++ {
			w.Write(line(i))
			want = append(want, line(i)...)
		}
		synctest.Wait()
		if got := out.String(); got != string(want) || out.count() != 1 {
			t.Fatalf("output after %d bytes = %q in %d writes, want %q in 1", len(want), got, out.count(), want)
		}
	})
}

// TestWarnWritesThrough: a Warn record is on the output, with the Info
// records before it, when the logging call returns; Info records wait.
func TestWarnWritesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{})
		defer w.Close()
		log := slog.New(w.Handler(slog.NewJSONHandler(w, nil), slog.LevelWarn)).With("subsystem", "sip")
		log.Info("call start", "call_id", "a")
		if n := out.count(); n != 0 {
			t.Fatalf("writes after an Info record = %d, want 0", n)
		}
		log.Warn("no rtp ports", "call_id", "a")
		got := out.String()
		if !strings.Contains(got, `"msg":"call start"`) || !strings.Contains(got, `"msg":"no rtp ports"`) || out.count() != 1 {
			t.Fatalf("output after the Warn record = %q in %d writes, want both records in 1", got, out.count())
		}
		log.WithGroup("g").Error("boom")
		if got := out.String(); !strings.Contains(got, `"msg":"boom"`) {
			t.Fatalf("output after an Error record through WithGroup = %q, want it", got)
		}
	})
}

// TestCloseFlushes: Close writes out what is buffered; later writes go
// straight through.
func TestCloseFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{Delay: time.Hour})
		w.Write(line(1))
		w.Write(line(2))
		w.Close()
		if got, want := out.String(), string(line(1))+string(line(2)); got != want {
			t.Fatalf("output after Close = %q, want %q", got, want)
		}
		w.Write(line(3))
		if got := out.String(); !strings.HasSuffix(got, string(line(3))) {
			t.Fatalf("output after a Write after Close = %q, want line 3 at once", got)
		}
		w.Close() // idempotent
	})
}

// TestConcurrent: many goroutines logging through slog: every record
// arrives once and whole, in far fewer writes. Run with -race.
func TestConcurrent(t *testing.T) {
	const goroutines, per = 8, 2000
	out := &sink{}
	w := New(out, Options{Delay: time.Millisecond, FlushAt: 4096})
	log := slog.New(w.Handler(slog.NewJSONHandler(w, nil), slog.LevelWarn))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				if i%500 == 499 {
					log.Warn("warn", "g", g, "i", i)
				} else {
					log.Info("call end", "g", g, "i", i, "pad", strings.Repeat("x", i%97))
				}
			}
		})
	}
	wg.Wait()
	w.Close()
	seen := make(map[[2]int]bool)
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var rec struct{ G, I int }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q is not a whole JSON record: %v", l, err)
		}
		k := [2]int{rec.G, rec.I}
		if seen[k] {
			t.Fatalf("record %v twice", k)
		}
		seen[k] = true
	}
	s := w.Stats()
	if len(seen) != goroutines*per || s.Records != goroutines*per || s.DroppedFull+s.DroppedError != 0 {
		t.Fatalf("%d distinct records, Stats %+v; want %d, none dropped", len(seen), s, goroutines*per)
	}
	if s.Writes >= goroutines*per/4 {
		t.Errorf("%d writes for %d records, want batching", s.Writes, goroutines*per)
	}
	t.Logf("%d records in %d writes", s.Records, s.Writes)
}

// TestBlockedOutput: while the output blocks, Write returns at once,
// the buffer stops at Limit and the excess is dropped and counted; a Warn
// record does not wait either; Close gives up after CloseWait; when the
// output unblocks, what was kept arrives whole.
func TestBlockedOutput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
		w := New(out, Options{Delay: 10 * time.Millisecond, FlushAt: 100, Limit: 1000})
		log := slog.New(w.Handler(slog.NewJSONHandler(w, nil), slog.LevelWarn))
		w.Write(line(0))
		<-out.inside // the timer's goroutine is now stuck in the output
		const n = 200
		for i := 1; i < n; i++ {
			w.Write(line(i))
		}
		log.Warn("disk full?") // must not block
		st := w.Stats()
		if st.DroppedFull == 0 {
			t.Fatalf("Stats with a blocked output = %+v, want drops", st)
		}
		w.mu.Lock()
		buffered := len(w.buf)
		w.mu.Unlock()
		if buffered > 1000 {
			t.Fatalf("buffered %d bytes, want at most Limit 1000", buffered)
		}
		start := time.Now()
		w.Close()
		if d := time.Since(start); d != DefaultCloseWait {
			t.Errorf("Close with a blocked output took %v (fake clock), want CloseWait %v", d, DefaultCloseWait)
		}
		// Unblock: the stuck write and then the rest (Close asked for it).
		out.gate <- struct{}{}
		<-out.inside
		out.gate <- struct{}{}
		synctest.Wait()
		st = w.Stats()
		if st.Records+st.DroppedFull != n+1 {
			t.Errorf("Stats %+v: records + dropped = %d, want %d", st, st.Records+st.DroppedFull, n+1)
		}
		for l := range strings.SplitSeq(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if !json.Valid([]byte(l)) {
				t.Fatalf("line %q is not whole", l)
			}
		}
		if !strings.Contains(out.String(), "disk full?") {
			// The Warn record came after drops started; it may be
			// dropped, but then it is counted above.
			t.Logf("the Warn record was dropped (buffer full)")
		}
	})
}

// TestWarnWhileWriting: a Warn record logged while another goroutine is
// in a write goes out right after that write, without the timer.
func TestWarnWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
		w := New(out, Options{Delay: time.Hour})
		defer w.Close()
		log := slog.New(w.Handler(slog.NewJSONHandler(w, nil), slog.LevelWarn))
		w.Write(line(0))
		go w.Flush() // writes line 0 and blocks in the output
		<-out.inside
		start := time.Now()
		log.Warn("urgent")
		out.gate <- struct{}{} // line 0 done; the writer goes round again
		<-out.inside
		out.gate <- struct{}{}
		synctest.Wait()
		if d := time.Since(start); d != 0 {
			t.Errorf("the Warn record went out after %v of fake time, want at once", d)
		}
		if got := out.String(); !strings.Contains(got, `"msg":"urgent"`) {
			t.Fatalf("output = %q, want the Warn record without waiting for the 1-h delay", got)
		}
	})
}

// TestFlushWritesOnce: a logging goroutine that flushes (a Warn record)
// makes one write; what piled up meanwhile is written by the timer's
// goroutine, so a slow output holds at most that one logging call.
func TestFlushWritesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
		w := New(out, Options{Delay: time.Hour})
		defer w.Close()
		w.Write(line(0))
		flushed := make(chan struct{})
		go func() { w.Flush(); close(flushed) }()
		<-out.inside
		w.Write(line(1))
		w.Flush() // a write is in flight: asks for another one at once
		out.gate <- struct{}{}
		<-flushed    // the first Flush returned after its one write...
		<-out.inside // ...while the timer's goroutine writes line 1
		out.gate <- struct{}{}
		synctest.Wait()
		if got, want := out.String(), string(line(0))+string(line(1)); got != want {
			t.Fatalf("output = %q, want %q", got, want)
		}
	})
}

// TestDelayWhileWriting: a record buffered while a write is in flight
// still goes out within Delay once that write returns.
func TestDelayWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{gate: make(chan struct{}), inside: make(chan struct{}, 1)}
		w := New(out, Options{Delay: 100 * time.Millisecond})
		defer w.Close()
		w.Write(line(0))
		go w.Flush()
		<-out.inside
		w.Write(line(1))
		out.gate <- struct{}{} // line 0 done; line 1 waits for its timer
		synctest.Wait()
		if got := out.String(); got != string(line(0)) {
			t.Fatalf("output right after the first write = %q, want line 0 only", got)
		}
		time.Sleep(100 * time.Millisecond)
		<-out.inside
		out.gate <- struct{}{}
		synctest.Wait()
		if got, want := out.String(), string(line(0))+string(line(1)); got != want {
			t.Fatalf("output after the delay = %q, want %q", got, want)
		}
	})
}

// TestWriteErrors: failed writes are counted, never returned, never
// block; a write that stopped inside a line is followed by a newline so
// the next records are whole lines.
func TestWriteErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &sink{}
		w := New(out, Options{})
		defer w.Close()
		fail := true
		out.fail = func(b []byte) (int, error) {
			if fail {
				return 0, &os.PathError{Op: "write", Path: "/dev/stderr", Err: syscall.EPIPE}
			}
			return len(b), nil
		}
		for i := range 3 {
			if n, err := w.Write(line(i)); n != len(line(i)) || err != nil {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(line(i)))
			}
		}
		w.Flush()
		if s := w.Stats(); s.DroppedError != 3 || s.Records != 0 {
			t.Fatalf("Stats after EPIPE = %+v, want 3 lost in errors", s)
		}
		// A short write: half of line 3 made it.
		half := len(line(3)) / 2
		out.fail = func(b []byte) (int, error) { return half, errors.New("no space left") }
		w.Write(line(3))
		w.Write(line(4))
		w.Flush()
		out.fail = nil
		w.Write(line(5))
		w.Flush()
		got := out.String()
		want := string(line(3)[:half]) + "\n" + string(line(5))
		if got != want {
			t.Fatalf("output = %q, want %q (the broken line ended, the next whole)", got, want)
		}
		if s := w.Stats(); s.DroppedError != 5 || s.Records != 1 {
			t.Errorf("Stats = %+v, want 5 lost, 1 written", s)
		}
	})
}

// TestHandlerEnabled: the wrapper keeps the wrapped handler's level.
func TestHandlerEnabled(t *testing.T) {
	w := New(&sink{}, Options{})
	defer w.Close()
	h := w.Handler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}), slog.LevelWarn)
	if h.Enabled(context.Background(), slog.LevelInfo) || !h.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled does not follow the wrapped handler's level")
	}
}
