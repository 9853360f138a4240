package b2bua

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/logwriter"
)

// TestCallLogLines: the call start and end lines carry their message and
// fields (CONTRACT.md: one line per call start and end with call_id), and
// nothing is written when Info is disabled.
func TestCallLogLines(t *testing.T) {
	var buf bytes.Buffer
	cl := callLog{slog.New(slog.NewJSONHandler(&buf, nil)), "abc@host"}
	cl.callStart("phone", "sip:alice@example.com", "sip:+15551230002@example.com", "cx01")
	cl.callEnd(resultAnswered, 200, 1234567*time.Microsecond)
	dec := json.NewDecoder(&buf)
	var lines []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if _, ok := m["time"]; !ok {
			t.Errorf("line %v has no time", m)
		}
		delete(m, "time")
		lines = append(lines, m)
	}
	want := []map[string]any{
		{"level": "INFO", "msg": "call start", "call_id": "abc@host", "origin": "phone",
			"from": "sip:alice@example.com", "to": "sip:+15551230002@example.com", "b_call_id": "cx01"},
		{"level": "INFO", "msg": "call end", "call_id": "abc@host", "result": "answered",
			"code": float64(200), "duration": "1.235s"},
	}
	if len(lines) != len(want) {
		t.Fatalf("lines = %v, want %v", lines, want)
	}
	for i := range want {
		if len(lines[i]) != len(want[i]) {
			t.Errorf("line %d = %v, want %v", i, lines[i], want[i])
		}
		for k, v := range want[i] {
			if lines[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
	}

	buf.Reset()
	quiet := callLog{slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "x"}
	quiet.callStart("pbx", "a", "b", "c")
	quiet.callEnd(resultFailed, 503, time.Second)
	if buf.Len() != 0 {
		t.Errorf("logged at level warn: %q", buf.String())
	}
}

// BenchmarkCallLogLines logs a call's start and end lines (logger With
// subsystem=sip, as the daemon's) through slog's JSON handler and through
// internal/logwriter's NewHandler (what the daemon builds), to io.Discard.
func BenchmarkCallLogLines(b *testing.B) {
	for _, tc := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewJSONHandler(io.Discard, nil)},
		{"logwriter", logwriter.NewHandler(io.Discard, true, nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cl := callLog{slog.New(tc.h).With("subsystem", "sip"), "0123456789abcdef@192.0.2.1"}
			b.ReportAllocs()
			for b.Loop() {
				cl.callStart("phone", "sip:alice@example.com", "sip:+15551230002@example.com", "cx0123456789abcdef0123456789abcdef")
				cl.callEnd(resultAnswered, 200, 1234567*time.Microsecond)
			}
		})
	}
}
