package rtprelay

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Bencode (BitTorrent BEP 3) is the encoding of rtpengine's ng control
// protocol: byte strings "4:spam", integers "i42e", lists "l...e" and
// dictionaries "d...e" with byte-string keys.
//
// Decoded values are string (byte strings, also dictionary keys), int64,
// []any and map[string]any. The encoder takes those, plus []byte, int and
// []string, and writes dictionary keys sorted, so its output is canonical.
// The decoder is strict about syntax (no leading zeros, no "-0", no
// trailing data, no duplicate keys, nesting at most bencodeMaxDepth) but
// accepts dictionary keys in any order: rtpengine writes them in insertion
// order.

// errBencode is wrapped by every decoding error.
var errBencode = errors.New("rtprelay: malformed bencode")

const (
	// bencodeMaxDepth bounds the nesting of lists and dictionaries.
	bencodeMaxDepth = 32
	// bencodeMaxLen bounds a whole message (a UDP datagram is smaller).
	bencodeMaxLen = 1 << 20
)

// bencodeAppend appends the bencoding of v to b.
func bencodeAppend(b []byte, v any) ([]byte, error) {
	return bencodeAppendDepth(b, v, 0)
}

func bencodeAppendDepth(b []byte, v any, depth int) ([]byte, error) {
	if depth > bencodeMaxDepth {
		return nil, fmt.Errorf("rtprelay: bencode: nested deeper than %d", bencodeMaxDepth)
	}
	var err error
	switch v := v.(type) {
	case string:
		b = strconv.AppendInt(b, int64(len(v)), 10)
		return append(append(b, ':'), v...), nil
	case []byte:
		b = strconv.AppendInt(b, int64(len(v)), 10)
		return append(append(b, ':'), v...), nil
	case int:
		return append(strconv.AppendInt(append(b, 'i'), int64(v), 10), 'e'), nil
	case int64:
		return append(strconv.AppendInt(append(b, 'i'), v, 10), 'e'), nil
	case []string:
		b = append(b, 'l')
		for _, e := range v {
			b, _ = bencodeAppendDepth(b, e, depth+1)
		}
		return append(b, 'e'), nil
	case []any:
		b = append(b, 'l')
		for _, e := range v {
			if b, err = bencodeAppendDepth(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, 'd')
		for _, k := range keys {
			b, _ = bencodeAppendDepth(b, k, depth+1)
			if b, err = bencodeAppendDepth(b, v[k], depth+1); err != nil {
				return nil, fmt.Errorf("%w (key %q)", err, k)
			}
		}
		return append(b, 'e'), nil
	default:
		return nil, fmt.Errorf("rtprelay: bencode: cannot encode %T", v)
	}
}

// bdecode decodes exactly one value that fills b.
func bdecode(b []byte) (any, error) {
	if len(b) > bencodeMaxLen {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", errBencode, len(b), bencodeMaxLen)
	}
	d := decoder{b: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(b) {
		return nil, d.errorf("%d bytes of trailing data", len(b)-d.off)
	}
	return v, nil
}

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", errBencode, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) value(depth int) (any, error) {
	if d.off >= len(d.b) {
		return nil, d.errorf("unexpected end")
	}
	switch c := d.b[d.off]; {
	case c == 'i':
		d.off++
		end := bytes.IndexByte(d.b[d.off:], 'e')
		if end < 0 {
			return nil, d.errorf("unterminated integer")
		}
		n, err := parseCanonicalInt(d.b[d.off : d.off+end])
		if err != nil {
			return nil, d.errorf("integer %q: %v", d.b[d.off:d.off+end], err)
		}
		d.off += end + 1
		return n, nil
	case c >= '0' && c <= '9':
		return d.str()
	case c == 'l':
		if depth >= bencodeMaxDepth {
			return nil, d.errorf("nested deeper than %d", bencodeMaxDepth)
		}
		d.off++
		l := []any{}
		for {
			if d.off >= len(d.b) {
				return nil, d.errorf("unterminated list")
			}
			if d.b[d.off] == 'e' {
				d.off++
				return l, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
	case c == 'd':
		if depth >= bencodeMaxDepth {
			return nil, d.errorf("nested deeper than %d", bencodeMaxDepth)
		}
		d.off++
		m := map[string]any{}
		for {
			if d.off >= len(d.b) {
				return nil, d.errorf("unterminated dictionary")
			}
			if d.b[d.off] == 'e' {
				d.off++
				return m, nil
			}
			if c := d.b[d.off]; c < '0' || c > '9' {
				return nil, d.errorf("dictionary key is not a byte string")
			}
			at := d.off
			k, err := d.str()
			if err != nil {
				return nil, err
			}
			if _, dup := m[k]; dup {
				d.off = at
				return nil, d.errorf("duplicate key %q", k)
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
	default:
		return nil, d.errorf("unexpected byte %q", c)
	}
}

func (d *decoder) str() (string, error) {
	colon := bytes.IndexByte(d.b[d.off:], ':')
	if colon < 0 || colon > 8 {
		return "", d.errorf("byte string without a length and ':'")
	}
	n, err := parseCanonicalInt(d.b[d.off : d.off+colon])
	if err != nil || n < 0 {
		return "", d.errorf("byte string length %q", d.b[d.off:d.off+colon])
	}
	start := d.off + colon + 1
	if n > int64(len(d.b)-start) {
		return "", d.errorf("byte string of %d bytes, %d left", n, len(d.b)-start)
	}
	d.off = start + int(n)
	return string(d.b[start:d.off]), nil
}

// parseCanonicalInt parses a decimal int64 without '+', leading zeros or "-0".
func parseCanonicalInt(s []byte) (int64, error) {
	switch {
	case len(s) == 0:
		return 0, errors.New("empty")
	case s[0] == '-' && (len(s) == 1 || s[1] == '0'):
		return 0, errors.New("not canonical")
	case s[0] == '0' && len(s) > 1:
		return 0, errors.New("leading zero")
	}
	for i, c := range s {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return 0, fmt.Errorf("bad digit %q", c)
		}
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return n, nil
}
