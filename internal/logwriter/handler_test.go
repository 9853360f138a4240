package logwriter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// both logs r through NewHandler and through slog's own handler, each
// built by build (options, With/WithGroup chain), and returns the bytes.
func both(t testing.TB, json bool, opts *slog.HandlerOptions, chain func(slog.Handler) slog.Handler, r slog.Record) (got, want []byte) {
	t.Helper()
	var gb, wb bytes.Buffer
	var ref slog.Handler
	if json {
		ref = slog.NewJSONHandler(&wb, opts)
	} else {
		ref = slog.NewTextHandler(&wb, opts)
	}
	h := NewHandler(&gb, json, opts)
	if chain != nil {
		ref, h = chain(ref), chain(h)
	}
	ctx := context.Background()
	if h.Enabled(ctx, r.Level) != ref.Enabled(ctx, r.Level) {
		t.Fatalf("Enabled(%v) differs", r.Level)
	}
	if !ref.Enabled(ctx, r.Level) {
		return nil, nil
	}
	if err := h.Handle(ctx, r.Clone()); err != nil {
		t.Fatal(err)
	}
	if err := ref.Handle(ctx, r.Clone()); err != nil {
		t.Fatal(err)
	}
	return gb.Bytes(), wb.Bytes()
}

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved value") }

// TestHandlerMatchesSlog: NewHandler writes what slog's JSON and text
// handlers write, byte for byte, for the records the fast path renders
// (the call log lines) and for those it hands to slog.
func TestHandlerMatchesSlog(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 22, 19, 29, 123456789, time.UTC)
	zones := []time.Time{
		t0, t0.Truncate(time.Second), t0.Truncate(time.Millisecond), t0.Add(-123456000),
		t0.In(time.FixedZone("CET", 3600)), t0.In(time.FixedZone("odd", -(3*3600 + 30*60))),
		time.Now(), {}, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	attrSets := [][]slog.Attr{
		nil,
		{slog.String("call_id", "0123456789abcdef@192.0.2.1"), slog.String("origin", "phone"),
			slog.String("from", "sip:alice@example.com"), slog.String("to", "sip:+15551230002@example.com"),
			slog.String("b_call_id", "cx0123")},
		{slog.String("call_id", "x"), slog.String("result", "answered"), slog.Int("code", 200),
			slog.String("duration", "1.235s")},
		{slog.Int64("neg", -5), slog.Uint64("u", 1<<63), slog.Bool("b", true), slog.Duration("d", 1500*time.Millisecond)},
		{slog.String("quote", `a "b" \c`), slog.String("ctl", "a\nb\rc\td\x00\x1f\x7f"), slog.String("", "empty key")},
		{slog.String("bad utf8", "a\xffb\xc3"), slog.String("uni", "héllo ☃ \u2028\u2029 \u00a0 \u200b \ufffd")},
		{slog.String("k=v", ""), slog.String("sp ace", "="), slog.String("html", "<sip:a@b>;x&y\\z")},
		{slog.Any("err", errors.New("boom")), slog.Float64("f", 1.5)},
		{slog.String("a", "b"), slog.Any("v", valuer{}), slog.Group("g", slog.Int("n", 1))},
		{slog.Time("t", t0), slog.Any("nil", nil), slog.Group("empty")},
	}
	chains := map[string]func(slog.Handler) slog.Handler{
		"none": nil,
		"with": func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.String("subsystem", "sip")}).WithAttrs(nil).
				WithAttrs([]slog.Attr{slog.Int("n", 3), slog.String("q", "a b")})
		},
		"with-any": func(h slog.Handler) slog.Handler { return h.WithAttrs([]slog.Attr{slog.Any("e", errors.New("x"))}) },
		"group": func(h slog.Handler) slog.Handler {
			return h.WithGroup("g").WithAttrs([]slog.Attr{slog.String("a", "b")})
		},
		"with-group": func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.String("a", "b")}).WithGroup("g")
		},
		"empty-grp": func(h slog.Handler) slog.Handler { return h.WithGroup("") },
	}
	optsSets := map[string]*slog.HandlerOptions{
		"nil":     nil,
		"debug":   {Level: slog.LevelDebug},
		"warn":    {Level: slog.LevelWarn},
		"source":  {AddSource: true},
		"replace": {ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { a.Key += "_"; return a }},
	}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2, slog.LevelError + 9}
	n := 0
	for _, json := range []bool{true, false} {
		for on, opts := range optsSets {
			for cn, chain := range chains {
				for _, tm := range zones {
					for _, lv := range levels {
						for _, as := range attrSets {
							for _, msg := range []string{"call start", "", "a \"quoted\"\nmsg"} {
								r := slog.NewRecord(tm, lv, msg, 0)
								r.AddAttrs(as...)
								got, want := both(t, json, opts, chain, r)
								n++
								if !bytes.Equal(got, want) {
									t.Fatalf("json=%v opts=%s chain=%s level=%v time=%v attrs=%v:\n got %q\nwant %q",
										json, on, cn, lv, tm, as, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d records compared", n)
}

// TestHandlerWriter: through a *Writer (no extra lock), records arrive
// whole and level filtering holds.
func TestHandlerWriter(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, Options{})
	log := slog.New(w.Handler(NewHandler(w, true, &slog.HandlerOptions{Level: slog.LevelInfo}), slog.LevelWarn))
	log.Debug("hidden")
	log.Info("a", "k", "v")
	log.Warn("b")
	w.Close()
	lines := bytes.Split(bytes.TrimSuffix(out.Bytes(), []byte("\n")), []byte("\n"))
	if len(lines) != 2 || !bytes.Contains(lines[0], []byte(`"msg":"a","k":"v"}`)) || !bytes.Contains(lines[1], []byte(`"level":"WARN","msg":"b"}`)) {
		t.Fatalf("output %q", out.Bytes())
	}
}

// FuzzHandler: for any string, integer and duration values, keys and
// messages, NewHandler's bytes equal slog's in both formats.
func FuzzHandler(f *testing.F) {
	f.Add("call start", "call_id", "abc@host", "with", "sip", int64(200), int64(1234567000), int64(1764195569123456789), int16(0))
	f.Add("a\"b\\c\n", "k=v", "\xff\xfe\u2028 \u00a0\x7f", "", "x y", int64(-1), int64(-5), int64(0), int16(60))
	f.Add("", "ключ", "значение☃", "w\x00", "", int64(0), int64(1), int64(-62135596800000000), int16(-90))
	f.Fuzz(func(t *testing.T, msg, key, val, wkey, wval string, n, d, unixNano int64, zoneMin int16) {
		tm := time.Unix(0, unixNano).In(time.FixedZone("z", int(zoneMin)*60))
		r := slog.NewRecord(tm, slog.LevelInfo, msg, 0)
		r.AddAttrs(slog.String(key, val), slog.Int64("n", n), slog.Duration("d", time.Duration(d)),
			slog.String("v", val), slog.Uint64(key, uint64(n)))
		chain := func(h slog.Handler) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.String(wkey, wval), slog.Bool(wval, n > 0)})
		}
		for _, json := range []bool{true, false} {
			for _, c := range []func(slog.Handler) slog.Handler{nil, chain} {
				got, want := both(t, json, nil, c, r)
				if !bytes.Equal(got, want) {
					t.Fatalf("json=%v:\n got %q\nwant %q", json, got, want)
				}
			}
		}
	})
}

// BenchmarkHandler: the call end line (With subsystem) through slog's
// JSON handler and through NewHandler, to io.Discard.
func BenchmarkHandler(b *testing.B) {
	for _, tc := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog-json", slog.NewJSONHandler(io.Discard, nil)},
		{"fast-json", NewHandler(io.Discard, true, nil)},
		{"slog-text", slog.NewTextHandler(io.Discard, nil)},
		{"fast-text", NewHandler(io.Discard, false, nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.h.WithAttrs([]slog.Attr{slog.String("subsystem", "sip")})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "call end", 0)
				r.AddAttrs(slog.String("call_id", "a84b4c76e66710@pc33.example.com"),
					slog.String("result", "answered"), slog.Int("code", 200), slog.String("duration", "1.002s"))
				h.Handle(ctx, r)
			}
		})
	}
}

// TestPlain8 checks the word-at-a-time test against the byte table for
// every byte value at every position.
func TestPlain8(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			s := []byte("abcdefgh")
			s[pos] = byte(c)
			want := c < 0x80 && jsonPlain[c]
			if got := plain8(string(s)); got != want {
				t.Fatalf("plain8(%q) = %v, want %v", s, got, want)
			}
		}
	}
}
