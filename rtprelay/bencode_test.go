package rtprelay

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestBencodeEncode(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"spam", "4:spam"},
		{[]byte("v=0\r\n"), "5:v=0\r\n"},
		{"", "0:"},
		{42, "i42e"},
		{int64(-7), "i-7e"},
		{0, "i0e"},
		{[]any{"a", 1, []any{}}, "l1:ai1elee"},
		{[]string{"origin", "session-connection"}, "l6:origin18:session-connectione"},
		{map[string]any{"command": "ping"}, "d7:command4:pinge"},
		{map[string]any{"sdp": "x", "call-id": "c", "from-tag": "f", "command": "offer"},
			"d7:call-id1:c7:command5:offer8:from-tag1:f3:sdp1:xe"},
		{map[string]any{}, "de"},
	}
	for _, tt := range tests {
		got, err := bencodeAppend(nil, tt.in)
		if err != nil || string(got) != tt.want {
			t.Errorf("bencodeAppend(%#v) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []any{1.5, map[string]any{"k": struct{}{}}, []any{nil}} {
		if got, err := bencodeAppend(nil, bad); err == nil {
			t.Errorf("bencodeAppend(%#v) = %q, want an error", bad, got)
		}
	}
	deep := any("x")
	for range bencodeMaxDepth + 2 {
		deep = []any{deep}
	}
	if _, err := bencodeAppend(nil, deep); err == nil {
		t.Errorf("bencodeAppend(nested %d) succeeded, want an error", bencodeMaxDepth+2)
	}
}

func TestBencodeDecode(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{"4:spam", "spam"},
		{"0:", ""},
		{"i42e", int64(42)},
		{"i-42e", int64(-42)},
		{"i0e", int64(0)},
		{"i9223372036854775807e", int64(9223372036854775807)},
		{"le", []any{}},
		{"l1:ai1elee", []any{"a", int64(1), []any{}}},
		{"de", map[string]any{}},
		// rtpengine writes keys in insertion order: accepted.
		{"d6:result4:pong7:warning1:xe", map[string]any{"result": "pong", "warning": "x"}},
		{"d7:warning1:x6:result4:ponge", map[string]any{"result": "pong", "warning": "x"}},
		{"d1:dd1:ll1:xeee", map[string]any{"d": map[string]any{"l": []any{"x"}}}},
	}
	for _, tt := range tests {
		got, err := bdecode([]byte(tt.in))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("bdecode(%q) = %#v, %v, want %#v", tt.in, got, err, tt.want)
		}
	}
}

func TestBencodeDecodeErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "unexpected end"},
		{"i42", "unterminated integer"},
		{"ie", "integer"},
		{"i-e", "integer"},
		{"i-0e", "not canonical"},
		{"i042e", "leading zero"},
		{"i+4e", "bad digit"},
		{"i4.2e", "bad digit"},
		{"i9223372036854775808e", "out of range"},
		{"5:spam", "5 bytes, 4 left"},
		{"05:spams", "byte string length"},
		{"-1:x", "unexpected byte"},
		{"4spam", "without a length"},
		{"999999999999:x", "without a length"},
		{"l1:a", "unterminated list"},
		{"d1:a", "unexpected end"},
		{"d1:ai1e", "unterminated dictionary"},
		{"di1ei2ee", "key is not a byte string"},
		{"d1:ai1e1:ai2ee", `duplicate key "a"`},
		{"4:spamx", "1 bytes of trailing data"},
		{"x", "unexpected byte"},
		{strings.Repeat("l", bencodeMaxDepth+1) + strings.Repeat("e", bencodeMaxDepth+1), "nested deeper"},
	}
	for _, tt := range tests {
		got, err := bdecode([]byte(tt.in))
		if !errors.Is(err, errBencode) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("bdecode(%q) = %#v, %v, want an error with %q", tt.in, got, err, tt.msg)
		}
	}
	if _, err := bdecode(make([]byte, bencodeMaxLen+1)); !errors.Is(err, errBencode) {
		t.Errorf("bdecode(%d bytes) = %v, want errBencode", bencodeMaxLen+1, err)
	}
	// Exactly bencodeMaxDepth levels decode.
	ok := strings.Repeat("l", bencodeMaxDepth) + strings.Repeat("e", bencodeMaxDepth)
	if _, err := bdecode([]byte(ok)); err != nil {
		t.Errorf("bdecode(%d levels) = %v", bencodeMaxDepth, err)
	}
}

// FuzzBencode checks that decoding never panics and that whatever decodes
// re-encodes to a value that decodes to the same thing; canonical input
// (sorted keys) re-encodes byte for byte.
func FuzzBencode(f *testing.F) {
	for _, s := range []string{
		"d7:command4:pinge",
		"d6:result4:ponge",
		"d7:call-id3:abc7:command5:offer8:from-tag2:ft3:ICE6:remove7:replacel6:origin18:session-connectione3:sdp16:v=0\r\no=- 1 1 IN IPe",
		"d6:result5:error12:error-reason15:Unknown call-ide",
		"d6:resultli1ei-1e0:de4:tagsd1:ad6:mediasld5:indexi1eeeeee",
		"l" + strings.Repeat("l", 40) + strings.Repeat("e", 41),
		"i-0e", "i00e", "3:ab", "d1:bi1e1:ai2ee", "d1:ai1e1:ai2ee",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := bdecode(in)
		if err != nil {
			return
		}
		enc, err := bencodeAppend(nil, v)
		if err != nil {
			t.Fatalf("bencodeAppend(bdecode(%q)) = %v", in, err)
		}
		v2, err := bdecode(enc)
		if err != nil {
			t.Fatalf("bdecode(%q) (re-encoded from %q) = %v", enc, in, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip of %q: %#v, then %#v", in, v, v2)
		}
		enc2, _ := bencodeAppend(nil, v2)
		if string(enc) != string(enc2) {
			t.Fatalf("encoding not canonical: %q, then %q", enc, enc2)
		}
	})
}
