package b2bua

import (
	"maps"

	"github.com/emiago/sipgo/sip"
)

// Fast header parsers (issue #6, CPU per call). sipgo parses every Via,
// From, To, Contact, CSeq, Call-ID, Max-Forwards and Content-Length through
// state machines that walk runes and grow parameter slices one append at a
// time. The parsers here accept only the plain shapes SIPp, phones and the
// gateway itself send (no commas, no escapes, token parameters, sip/sips
// URIs with a name or IPv4 host) and build the very same values with one
// allocation per header. Anything else goes to sipgo's own parser for that
// header, whose result (and error, including the unexported comma error
// that drives its list handling) is returned unchanged.
// FuzzHeaderParsers holds the two to DeepEqual results.
//
// Installed in New (sipgo.WithUserAgentParser(newFastParser())): whole
// SIPp messages parse ~20 % cheaper (BenchmarkParseSIPpCall, 171 -> 133
// allocations), and the gateway's CPU per call at 2,000 calls/s was lower
// with them in each of three alternated callbench rounds (docs/b2bua.md,
// "Header parsing"; docs/benchmarks.md).

// fastHeaderParsers returns a copy of sipgo's default header parser map
// with the fast parsers put in under every name and alias.
func fastHeaderParsers() map[string]sip.HeaderParser {
	def := sip.DefaultHeadersParser()
	m := maps.Clone(def)
	put := func(fast func(string, sip.HeaderParser) (sip.Header, error), names ...string) {
		slow := def[names[0]]
		if slow == nil {
			return // sipgo dropped the parser: keep its map as it is
		}
		for _, n := range names {
			m[n] = func(name []byte, text string) (sip.Header, error) { return fast(text, slow) }
		}
	}
	put(fastVia, "via", "v")
	put(fastFrom, "from", "f")
	put(fastTo, "to", "t")
	put(fastContact, "contact", "m")
	put(fastCSeq, "cseq")
	put(fastCallID, "call-id", "i")
	put(fastMaxForwards, "max-forwards")
	put(fastContentLength, "content-length", "l")
	return m
}

// newFastParser is the sipgo message parser with the fast header parsers.
func newFastParser() *sip.Parser {
	return sip.NewParser(sip.WithHeadersParsers(fastHeaderParsers()))
}

// Character classes (ASCII only; everything else falls back).
const (
	clsAlnum   = 1 << iota // A-Z a-z 0-9
	clsToken               // RFC 3261 token: alnum - . ! % * _ + ` ' ~
	clsHost                // alnum - .
	clsUser                // user part as sipgo keeps it: unreserved, escaped-free
	clsDisplay             // unquoted display name: token chars and space
	clsQuoted              // inside a quoted display name, no escapes
)

var charClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum {
			t[c] |= clsAlnum | clsToken | clsHost | clsUser | clsDisplay | clsQuoted
			continue
		}
		switch b {
		case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
			t[c] |= clsToken | clsDisplay | clsQuoted
		}
		switch b {
		case '-', '.':
			t[c] |= clsHost
		}
		switch b {
		case '-', '_', '.', '!', '~', '*', '\'', '(', ')', '&', '=', '+', '$', ';', '/':
			t[c] |= clsUser
		}
		switch b {
		case ' ':
			t[c] |= clsDisplay | clsQuoted
		case '#', '(', ')', '/', ':', '?', '@', '[', ']', '{', '}', '=', '$', '&', '|', '^':
			t[c] |= clsQuoted
		}
	}
	return t
}()

func allIn(s string, cls uint8) bool {
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&cls == 0 {
			return false
		}
	}
	return true
}

// smallUint parses 1..maxDigits ASCII digits.
func smallUint(s string, maxDigits int) (uint64, bool) {
	if len(s) == 0 || len(s) > maxDigits {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// appendParams appends the ';'-separated parameters of s to p, each
// token[=token]. It reports false for anything else (empty, quoted, spaced,
// a trailing ';', more than maxParams) and for a repeated name (sipgo
// overwrites it in place): left to sipgo.
func appendParams(p sip.HeaderParams, s string) (sip.HeaderParams, bool) {
	first := len(p)
	for {
		i, eq := 0, -1
		for ; i < len(s) && s[i] != ';'; i++ {
			c := s[i]
			if c == '=' && eq < 0 {
				eq = i
			} else if charClass[c]&clsToken == 0 {
				return p, false
			}
		}
		name, val := s[:i], ""
		if eq >= 0 {
			name, val = s[:eq], s[eq+1:i]
			if len(val) == 0 {
				return p, false
			}
		}
		if len(name) == 0 || len(p)-first >= maxParams {
			return p, false
		}
		for _, kv := range p[first:] {
			if kv.K == name {
				return p, false
			}
		}
		p = append(p, sip.HeaderKV{K: name, V: val})
		if i == len(s) {
			return p, true
		}
		s = s[i+1:]
		if len(s) == 0 {
			return p, false // trailing ';'
		}
	}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func cut(s string, c byte) (before, after string, found bool) {
	if i := indexByte(s, c); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// boxParams is how many parameters (URI and header together) fit in the
// allocation that carries a header; more are appended to a new slice.
const boxParams = 2

// maxParams: more parameters than that go to sipgo.
const maxParams = 8

// fastURI fills u from a sip/sips URI without '?' headers, IPv6 or
// password, its parameters into kv. It reports false for anything else.
func fastURI(s string, u *sip.Uri, kv []sip.HeaderKV) ([]sip.HeaderKV, bool) {
	if len(s) < 4 {
		return kv, false
	}
	switch {
	case (s[0]|0x20) == 's' && (s[1]|0x20) == 'i' && (s[2]|0x20) == 'p' && s[3] == ':':
		u.Scheme, s = "sip", s[4:]
	case len(s) > 4 && (s[0]|0x20) == 's' && (s[1]|0x20) == 'i' && (s[2]|0x20) == 'p' && (s[3]|0x20) == 's' && s[4] == ':':
		u.Scheme, s = "sips", s[5:]
	default:
		return kv, false
	}
	if len(s) > 0 && s[0] == '/' {
		return kv, false // sip:// — sipgo's HierarhicalSlashes
	}
	if at := indexByte(s, '@'); at >= 0 {
		// sipgo takes everything up to the first '@' as the user, its
		// ';' parameters included.
		user := s[:at]
		if len(user) == 0 || !allIn(user, clsUser) {
			return kv, false
		}
		u.User, s = user, s[at+1:]
	}
	hostEnd := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ':' || c == ';' {
			hostEnd = i
			break
		} else if charClass[c]&clsHost == 0 {
			return kv, false
		}
	}
	if hostEnd == 0 {
		return kv, false
	}
	u.Host, s = s[:hostEnd], s[hostEnd:]
	if len(s) > 0 && s[0] == ':' {
		end := indexByte(s, ';')
		if end < 0 {
			end = len(s)
		}
		port, ok := smallUint(s[1:end], 5)
		if !ok {
			return kv, false
		}
		u.Port, s = int(port), s[end:]
	}
	if len(s) == 0 {
		return kv, true
	}
	// s starts with ';'
	start := len(kv)
	kv, ok := appendParams(kv, s[1:])
	if !ok {
		return kv, false
	}
	u.UriParams = kv[start:len(kv):len(kv)]
	return kv, true
}

// fastAddress parses name-addr / addr-spec shapes into display, uri and
// params, the parameter storage coming from kv (len 0).
func fastAddress(s string, display *string, u *sip.Uri, params *sip.HeaderParams, kv []sip.HeaderKV) bool {
	lt, gt, semi, quote := -1, -1, -1, -1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',':
			return false
		case '<':
			if lt < 0 {
				lt = i
			}
		case '>':
			if gt < 0 {
				gt = i
			}
		case ';':
			if semi < 0 {
				semi = i
			}
		case '"':
			if quote < 0 {
				quote = i
			}
		}
	}
	var uri, rest string
	switch {
	case len(s) == 0:
		return false
	case lt < 0:
		// addr-spec: sipgo splits at the first ';', the rest is header
		// parameters.
		if quote >= 0 || gt >= 0 {
			return false
		}
		uri = s
		if semi >= 0 {
			uri, rest = s[:semi], s[semi:]
		}
	default:
		if gt < lt {
			return false
		}
		if quote == 0 {
			// "display" <uri>: no escapes, no specials inside, only
			// spaces between the closing quote and '<'.
			q := 1
			for ; q < lt && s[q] != '"'; q++ {
				if charClass[s[q]]&clsQuoted == 0 {
					return false
				}
			}
			if q >= lt {
				return false
			}
			for i := q + 1; i < lt; i++ {
				if s[i] != ' ' {
					return false
				}
			}
			*display = s[1:q]
		} else {
			// unquoted display name: tokens and spaces
			i, j := 0, lt
			for k := 0; k < lt; k++ {
				if charClass[s[k]]&clsDisplay == 0 {
					return false
				}
			}
			for i < j && s[i] == ' ' {
				i++
			}
			for j > i && s[j-1] == ' ' {
				j--
			}
			*display = s[i:j]
		}
		uri, rest = s[lt+1:gt], s[gt+1:]
		if len(rest) > 0 && rest[0] != ';' {
			return false
		}
	}
	kv, ok := fastURI(uri, u, kv)
	if !ok {
		return false
	}
	if len(rest) == 0 {
		return true
	}
	start := len(kv)
	kv, ok = appendParams(kv, rest[1:])
	if !ok {
		return false
	}
	*params = kv[start:len(kv):len(kv)]
	return true
}

type fromBox struct {
	h  sip.FromHeader
	kv [boxParams]sip.HeaderKV
}

type toBox struct {
	h  sip.ToHeader
	kv [boxParams]sip.HeaderKV
}

type contactBox struct {
	h  sip.ContactHeader
	kv [boxParams]sip.HeaderKV
}

type viaBox struct {
	h  sip.ViaHeader
	kv [boxParams]sip.HeaderKV
}

func fastFrom(text string, slow sip.HeaderParser) (sip.Header, error) {
	b := &fromBox{}
	if !fastAddress(text, &b.h.DisplayName, &b.h.Address, &b.h.Params, b.kv[:0]) {
		return slow(nil, text)
	}
	return &b.h, nil
}

func fastTo(text string, slow sip.HeaderParser) (sip.Header, error) {
	b := &toBox{}
	if !fastAddress(text, &b.h.DisplayName, &b.h.Address, &b.h.Params, b.kv[:0]) {
		return slow(nil, text)
	}
	return &b.h, nil
}

func fastContact(text string, slow sip.HeaderParser) (sip.Header, error) {
	b := &contactBox{}
	if !fastAddress(text, &b.h.DisplayName, &b.h.Address, &b.h.Params, b.kv[:0]) {
		return slow(nil, text)
	}
	return &b.h, nil
}

// fastVia: "SIP/2.0/UDP host[:port][;token[=token]]...".
func fastVia(text string, slow sip.HeaderParser) (sip.Header, error) {
	if b, ok := fastViaBox(text); ok {
		return &b.h, nil
	}
	return slow(nil, text)
}

func fastViaBox(s string) (*viaBox, bool) {
	if indexByte(s, ',') >= 0 {
		return nil, false
	}
	proto, s, ok1 := cut(s, '/')
	ver, s, ok2 := cut(s, '/')
	transport, s, ok3 := cut(s, ' ')
	if !ok1 || !ok2 || !ok3 || len(proto) == 0 || len(ver) == 0 || len(transport) == 0 ||
		!allIn(proto, clsAlnum) || !allIn(transport, clsAlnum) || !allIn(ver, clsHost) {
		return nil, false
	}
	sentBy, params, hasParams := cut(s, ';')
	host, portStr, hasPort := cut(sentBy, ':')
	if len(host) == 0 || !allIn(host, clsHost) {
		return nil, false
	}
	b := &viaBox{}
	h := &b.h
	h.ProtocolName, h.ProtocolVersion, h.Transport, h.Host = proto, ver, transport, host
	if hasPort {
		port, ok := smallUint(portStr, 5)
		if !ok {
			return nil, false
		}
		h.Port = int(port)
	}
	if hasParams {
		kv, ok := appendParams(b.kv[:0], params)
		if !ok {
			return nil, false
		}
		h.Params = kv[:len(kv):len(kv)]
	}
	return b, true
}

const maxCSeq = 1<<31 - 1

// fastCSeq: "digits METHOD".
func fastCSeq(text string, slow sip.HeaderParser) (sip.Header, error) {
	num, method, ok := cut(text, ' ')
	if ok && len(method) > 0 && allIn(method, clsAlnum) {
		if seq, ok := smallUint(num, 10); ok && seq <= maxCSeq {
			return &sip.CSeqHeader{SeqNo: uint32(seq), MethodName: sip.RequestMethod(method)}, nil
		}
	}
	return slow(nil, text)
}

// fastCallID: any value without surrounding white space or control bytes.
func fastCallID(text string, slow sip.HeaderParser) (sip.Header, error) {
	if n := len(text); n > 0 && text[0] > ' ' && text[0] < 0x7f && text[n-1] > ' ' && text[n-1] < 0x7f {
		h := sip.CallIDHeader(text)
		return &h, nil
	}
	return slow(nil, text)
}

func fastMaxForwards(text string, slow sip.HeaderParser) (sip.Header, error) {
	if v, ok := smallUint(text, 9); ok {
		h := sip.MaxForwardsHeader(v)
		return &h, nil
	}
	return slow(nil, text)
}

func fastContentLength(text string, slow sip.HeaderParser) (sip.Header, error) {
	if v, ok := smallUint(text, 9); ok {
		h := sip.ContentLengthHeader(v)
		return &h, nil
	}
	return slow(nil, text)
}
