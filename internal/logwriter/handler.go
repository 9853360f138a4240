package logwriter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// NewHandler returns a slog.Handler that writes to out exactly what
// slog.NewJSONHandler(out, opts) (json true) or slog.NewTextHandler would
// write for the same records, byte for byte, with less work for the
// common record: one whose attributes (its own and those of With) are all
// strings, integers, booleans or durations, on a logger without groups,
// with neither opts.AddSource nor opts.ReplaceAttr. Such a record is
// rendered here into a pooled buffer; every other record, and every
// record of a handler with those options, goes to slog's own handler
// (built with the same options and the same With/WithGroup chain).
// TestHandlerMatchesSlog and FuzzHandler hold the two to the same bytes.
//
// Each record is one Write, as with slog's handlers; writes are
// serialised unless out is a *Writer (safe for concurrent use already).
func NewHandler(out io.Writer, json bool, opts *slog.HandlerOptions) slog.Handler {
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	h := &handler{json: json, w: out}
	if _, ok := out.(*Writer); !ok {
		lw := &lockedWriter{w: out}
		h.w = lw
		out = lw
	}
	if json {
		h.slow = slog.NewJSONHandler(out, opts)
	} else {
		h.slow = slog.NewTextHandler(out, opts)
	}
	h.fast = !opts.AddSource && opts.ReplaceAttr == nil
	return h
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type handler struct {
	slow slog.Handler // slog's handler, same options and With chain
	json bool
	w    io.Writer // a *Writer or a *lockedWriter (shared with slow)
	// fast is false once the chain holds a group or an attribute the fast
	// path does not render (then every record goes to slow).
	fast bool
	// pre is the rendered With attributes, each with its separator
	// before it.
	pre []byte
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.slow.Enabled(ctx, l) }

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := &handler{slow: h.slow.WithAttrs(as), json: h.json, w: h.w, fast: h.fast}
	if h2.fast {
		pre := append([]byte(nil), h.pre...)
		for _, a := range as {
			var ok bool
			if pre, ok = h.appendAttr(pre, a); !ok {
				h2.fast = false
				break
			}
		}
		h2.pre = pre
	}
	return h2
}

func (h *handler) WithGroup(name string) slog.Handler {
	// Groups (even an empty name) are slog's to render.
	return &handler{slow: h.slow.WithGroup(name), json: h.json, w: h.w}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if !h.fast {
		return h.slow.Handle(ctx, r)
	}
	bp := bufPool.Get().(*[]byte)
	b, ok := h.appendRecord((*bp)[:0], r)
	var err error
	if ok {
		_, err = h.w.Write(b)
	}
	if cap(b) <= 16<<10 {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	if !ok {
		return h.slow.Handle(ctx, r)
	}
	return err
}

// appendRecord renders r; false when r needs slog's handler.
func (h *handler) appendRecord(b []byte, r slog.Record) ([]byte, bool) {
	if h.json {
		b = append(b, '{')
	}
	if !r.Time.IsZero() {
		t := r.Time.Round(0)
		if y := t.Year(); y < 0 || y >= 10000 {
			return b, false // slog reports an error (JSON) or misformats (text)
		}
		if h.json {
			b = append(b, `"time":"`...)
			b = appendTime(b, t, true)
			b = append(b, `",`...)
		} else {
			b = append(b, "time="...)
			b = appendTime(b, t, false)
			b = append(b, ' ')
		}
	}
	if h.json {
		b = append(b, `"level":`...)
	} else {
		b = append(b, "level="...)
	}
	b = h.appendString(b, r.Level.String())
	if h.json {
		b = append(b, `,"msg":`...)
	} else {
		b = append(b, " msg="...)
	}
	b = h.appendString(b, r.Message)
	b = append(b, h.pre...)
	ok := true
	r.Attrs(func(a slog.Attr) bool {
		b, ok = h.appendAttr(b, a)
		return ok
	})
	if !ok {
		return b, false
	}
	if h.json {
		b = append(b, '}')
	}
	return append(b, '\n'), true
}

// timeSecond is a second rendered in RFC 3339 for a location: the date
// and clock ("2006-01-02T15:04:05") and the zone ("Z" or "+01:00"). The
// zone offset is a function of the location and the Unix second, so the
// rendering can be reused for every record of that second.
type timeSecond struct {
	unix  int64
	loc   *time.Location
	clock string
	zone  string
}

var lastSecond atomic.Pointer[timeSecond]

// appendTime appends t (year 0–9999) as slog does: RFC 3339 with
// nanoseconds, trailing zeros trimmed (JSON: time.RFC3339Nano), or with
// exactly three digits of milliseconds, truncated (text).
func appendTime(b []byte, t time.Time, nano bool) []byte {
	unix, loc := t.Unix(), t.Location()
	ts := lastSecond.Load()
	if ts == nil || ts.unix != unix || ts.loc != loc {
		f := t.Format(time.RFC3339)
		ts = &timeSecond{unix: unix, loc: loc, clock: f[:19], zone: f[19:]}
		lastSecond.Store(ts)
	}
	b = append(b, ts.clock...)
	ns := t.Nanosecond()
	if nano {
		if ns != 0 {
			digits := 9
			for ns%10 == 0 {
				ns /= 10
				digits--
			}
			b = append(b, '.')
			b = appendPadded(b, ns, digits)
		}
	} else {
		b = append(b, '.')
		b = appendPadded(b, ns/1e6, 3)
	}
	return append(b, ts.zone...)
}

// appendPadded appends n (≥ 0) in exactly digits decimal digits.
func appendPadded(b []byte, n, digits int) []byte {
	var d [9]byte
	for i := digits - 1; i >= 0; i-- {
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[:digits]...)
}

// appendAttr appends a's separator, key and value; false when the fast
// path does not render a.
func (h *handler) appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if a.Key == "" {
		return b, false
	}
	sep, eq := byte(' '), byte('=')
	if h.json {
		sep, eq = ',', ':'
	}
	b = append(b, sep)
	b = h.appendString(b, a.Key)
	b = append(b, eq)
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		return h.appendString(b, v.String()), true
	case slog.KindInt64:
		return strconv.AppendInt(b, v.Int64(), 10), true
	case slog.KindUint64:
		return strconv.AppendUint(b, v.Uint64(), 10), true
	case slog.KindBool:
		return strconv.AppendBool(b, v.Bool()), true
	case slog.KindDuration:
		if h.json {
			return strconv.AppendInt(b, int64(v.Duration()), 10), true
		}
		return append(b, v.Duration().String()...), true
	}
	return b, false
}

func (h *handler) appendString(b []byte, s string) []byte {
	if h.json {
		return appendJSONString(b, s)
	}
	return appendTextString(b, s)
}

// jsonPlain[c] is true for the ASCII bytes a JSON string holds as they
// are (slog escapes the others: control characters, '"' and '\\').
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// plain8 reports whether none of the 8 bytes of s is below 0x20, '"',
// '\\' or non-ASCII (the word-at-a-time zero-byte test: never a false
// true; a false false only sends those bytes through the byte loop).
func plain8(s string) bool { return plainWord(load8(s)) }

// load8 is the first 8 bytes of s, little-endian (one load).
func load8(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func plainWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	ctl := x - 0x20*ones // a byte < 0x20 borrows into its high bit
	q := x ^ '"'*ones
	q = (q - ones) &^ q
	bs := x ^ '\\'*ones
	bs = (bs - ones) &^ bs
	return (ctl|q|bs|x)&highs == 0
}

// jsonInvalidUTF8 is what slog's JSON handler writes for an invalid UTF-8
// byte: the escape \ufffd, or with Go's JSON v2 experiment (on by default
// in Go 1.27) the replacement character itself. Asked of slog once.
var jsonInvalidUTF8 = func() string {
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("", "k", "\xff")
	if bytes.Contains(out.Bytes(), []byte(`"k":"\ufffd"`)) {
		return `\ufffd`
	}
	return "\ufffd"
}()

// appendJSONString appends s quoted as slog's JSON handler quotes strings:
// \" \\ \n \r \t, other control characters as \u00xx, each invalid UTF-8
// byte as jsonInvalidUTF8, U+2028 and U+2029 escaped, everything else as it is.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for ; i+8 <= len(s) && plainWord(load8(s[i:])); i += 8 {
	}
	if i+8 > len(s) && len(s) >= 8 && plainWord(load8(s[len(s)-8:])) {
		i = len(s) // the tail, overlapping the last word checked
	}
	for i < len(s) && s[i] < utf8.RuneSelf && jsonPlain[s[i]] {
		i++
	}
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	done := 0 // s[:done] is in b
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			b = append(b, s[done:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			done = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, s[done:i]...)
			b = append(b, jsonInvalidUTF8...)
			done = i + n
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[done:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
			done = i + n
		}
		i += n
	}
	b = append(b, s[done:]...)
	return append(b, '"')
}

// appendTextString appends s as slog's text handler does: as it is, or
// Go-quoted when it is empty or holds a space, '=', '"', a control
// character, invalid UTF-8, or a non-ASCII space or unprintable rune.
func appendTextString(b []byte, s string) []byte {
	if textNeedsQuotes(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func textNeedsQuotes(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == ' ' || c == '=' || c == '"' || c < 0x20 {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += n
	}
	return false
}
