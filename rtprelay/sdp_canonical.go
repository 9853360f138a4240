package rtprelay

import (
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// The canonical path parses and rewrites, in one pass each and with one
// allocation for the output, the SDP that pion/sdp would itself render
// byte for byte as it read it: CRLF lines in RFC 4566 order, fields
// separated by single spaces, numbers without leading zeros, the line
// types v o s i e p c b t a m (no u r z k), the media kinds and transport
// protocols pion knows. That is what phones and PBXes send. For such SDP
// its result is exactly that of pion's parse, our rewrite and pion's
// Marshal (FuzzCanonicalSDP checks it against the pion path); anything else
// takes the pion path as before, and SDP pion rejects the tolerant
// line-based one. pion's parse made 2.5 KB of garbage per SDP (most of a
// call's setup garbage), which paced the garbage collector.

// parseCanonical parses b into p, which must be zero, when b is canonical
// SDP (see above) and reports whether it was. p then refers to b
// (p.canon), which must not change while p is used; mediaInfo keeps no
// part of it. b must have passed parseSDP's checks (no bare CR, no NUL).
func (p *parsedSDP) parseCanonical(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	s := unsafe.String(&b[0], len(b))
	if !strings.HasPrefix(s, "v=0\r\n") || !strings.HasSuffix(s, "\r\n") {
		return false
	}
	p.canon = s
	p.media = p.mediaBuf[:0]
	if !p.canonicalLines() {
		*p = parsedSDP{}
		return false
	}
	return true
}

func (p *parsedSDP) canonicalLines() bool {
	s := p.canon
	var sessAddr netip.Addr
	var sessHold bool
	sessDir := dirSendRecv
	rank := -1 // of the previous line, canonicalRank
	var cur *mediaInfo
	first := ""
	for rest := s; rest != ""; {
		nl := strings.IndexByte(rest, '\n')
		if nl < 3 || rest[nl-1] != '\r' || rest[1] != '=' {
			return false
		}
		line := rest[2 : nl-1]
		typ := rest[0]
		rest = rest[nl+1:]
		r := canonicalRank(typ, cur != nil)
		switch {
		case r < 0:
			return false
		case typ != 'm' && (r < rank || r == rank && typ != 'b' && typ != 't' && typ != 'a'):
			return false
		case rank < 0 && typ != 'v', rank == 0 && typ != 'o', rank == 1 && typ != 's':
			return false
		case r > rankT && rank < rankT:
			return false // a= or m= before t=
		}
		rank = r
		switch typ {
		case 'v':
			if line != "0" {
				return false
			}
		case 'o':
			if !canonicalOrigin(line) {
				return false
			}
		case 'c':
			if !canonicalConn(line) {
				return false
			}
			a, h, err := parseConn(line)
			if err != nil {
				return false
			}
			if cur == nil {
				sessAddr, sessHold = a, h
			} else {
				cur.addr, cur.hold, cur.hasConn = a, h, true
			}
		case 'b':
			if !canonicalBandwidth(line) {
				return false
			}
		case 't':
			f0, f1, ok := strings.Cut(line, " ")
			if !ok || !canonicalUint(f0, 19) || !canonicalUint(f1, 19) {
				return false
			}
		case 'a':
			k, v := attrKV(line)
			if k != line && v == "" {
				return false // "a=key:" is rendered "a=key"
			}
			if cur == nil {
				if d, ok := parseDirection(k); ok {
					sessDir = d
				}
			} else {
				cur.attr(k, v, first)
			}
		case 'm':
			mi, f, ok := canonicalMedia(line)
			if !ok {
				return false
			}
			mi.addr, mi.hold, mi.dir = sessAddr, sessHold, sessDir
			first = f
			mi.clock = staticClock(first)
			p.media = append(p.media, mi)
			cur = &p.media[len(p.media)-1]
		}
	}
	return rank >= rankT
}

// Ranks of canonical line types: session v o s i e p c b t a (0-9), then
// per media m i c b a (10-14); a line's rank must not fall, and only b, t
// and a repeat. An m= line starts a section again at rank 10.
const rankT = 8

func canonicalRank(typ byte, media bool) int {
	if typ == 'm' {
		return rankT + 2
	}
	order := "vosiepcbta"
	base := 0
	if media {
		order, base = "micba", rankT+2
	}
	if i := strings.IndexByte(order, typ); i >= 0 {
		return base + i
	}
	return -1
}

// canonicalUint: digits as strconv renders them, at most n of them.
func canonicalUint(s string, n int) bool {
	if s == "" || len(s) > n || s[0] == '0' && len(s) > 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canonicalFields splits s at single spaces into at most len(f) fields;
// ok is false for an empty field, a tab, or more fields than f holds.
func canonicalFields(s string, f []string) (n int, ok bool) {
	if strings.IndexByte(s, '\t') >= 0 {
		return 0, false
	}
	for n < len(f) {
		v, rest, more := strings.Cut(s, " ")
		if v == "" {
			return 0, false
		}
		f[n], s = v, rest
		n++
		if !more {
			return n, true
		}
	}
	return 0, false
}

func canonicalOrigin(v string) bool {
	var f [6]string
	n, ok := canonicalFields(v, f[:])
	return ok && n == 6 && isDigits(f[1]) && isDigits(f[2]) && f[3] == "IN" && (f[4] == "IP4" || f[4] == "IP6")
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != "" && len(s) <= 19
}

func canonicalConn(v string) bool {
	var f [3]string
	n, ok := canonicalFields(v, f[:])
	return ok && n == 3 && f[0] == "IN" && (f[1] == "IP4" || f[1] == "IP6")
}

func canonicalBandwidth(v string) bool {
	t, n, ok := strings.Cut(v, ":")
	switch t {
	case "CT", "AS", "TIAS", "RS", "RR":
	default:
		return false
	}
	return ok && canonicalUint(n, 19)
}

// canonicalMedia parses an m= value: kind, port and protocols as pion/sdp
// accepts and renders them, at least one format.
func canonicalMedia(v string) (mi mediaInfo, first string, ok bool) {
	if strings.IndexByte(v, '\t') >= 0 {
		return mi, "", false
	}
	kind, rest, _ := strings.Cut(v, " ")
	switch kind {
	case "audio", "video", "text", "application", "message":
		mi.kind = *internKind(kind)
	default:
		return mi, "", false
	}
	port, rest, _ := strings.Cut(rest, " ")
	port, rng, hasRange := strings.Cut(port, "/")
	if !canonicalUint(port, 5) || hasRange && !canonicalUint(rng, 9) {
		return mi, "", false
	}
	n, _ := strconv.Atoi(port)
	if n > 65535 {
		return mi, "", false
	}
	mi.port = int32(n)
	proto, formats, ok := strings.Cut(rest, " ")
	if !ok || proto == "" {
		return mi, "", false
	}
	for pr := range strings.SplitSeq(proto, "/") {
		switch pr {
		case "UDP", "RTP", "AVP", "SAVP", "SAVPF", "TLS", "DTLS", "SCTP", "AVPF", "TCP", "MSRP", "BFCP", "UDT", "IX", "MRCPv2", "FEC":
		default:
			return mi, "", false
		}
	}
	first, _, _ = strings.Cut(formats, " ")
	for f := range strings.SplitSeq(formats, " ") {
		if f == "" {
			return mi, "", false
		}
	}
	mi.anchored = mi.port != 0 && udpTransport(proto)
	return mi, first, true
}

// attrKV splits an a= value as pion/sdp does: at the first colon, unless
// it is the first character.
func attrKV(v string) (key, val string) {
	if i := strings.IndexByte(v, ':'); i > 0 {
		return v[:i], v[i+1:]
	}
	return v, ""
}

// rewriteCanonical is rewritePion for canonical SDP, byte for byte.
func (p *parsedSDP) rewriteCanonical(plan *rewritePlan) []byte {
	adv := plan.addr
	var buf [1024]byte // rendered here, then copied at its size
	out := buf[:0]
	origSess := ""
	sessRewritten := false
	mi := -1
	var mp mediaPlan
	mport := 0
	pendingConn := false // a stream left alone still needs the session's c= (after m= and i=)
	for rest := p.canon; rest != ""; {
		nl := strings.IndexByte(rest, '\n')
		line := rest[:nl-1]
		rest = rest[nl+1:]
		typ, val := line[0], line[2:]
		if pendingConn && typ != 'i' {
			out = append(append(append(out, "c="...), origSess...), "\r\n"...)
			pendingConn = false
		}
		switch {
		case typ == 'o':
			out = append(out, "o=- "...)
			out = strconv.AppendUint(out, plan.sessID, 10)
			out = append(out, ' ')
			out = strconv.AppendUint(out, plan.sessVer, 10)
			out = append(out, ' ')
			out = appendConn(out, adv)
			out = append(out, "\r\n"...)
			continue
		case typ == 'm':
			mi++
			mp = plan.media[mi]
			if mp.rtp == 0 {
				pendingConn = sessRewritten && !p.media[mi].hasConn
				break
			}
			mport = int(p.media[mi].port)
			kind, after, _ := strings.Cut(val, " ")
			_, after, _ = strings.Cut(after, " ")
			out = append(append(out, "m="...), kind...)
			out = append(out, ' ')
			out = strconv.AppendInt(out, int64(mp.rtp), 10)
			out = append(append(append(out, ' '), after...), "\r\n"...)
			continue
		case mi >= 0 && mp.rtp == 0:
			// a stream we leave alone: as it was
		case typ == 'c':
			if _, hold, _ := parseConn(val); !hold {
				if mi < 0 {
					origSess, sessRewritten = val, true
				}
				out = appendConn(append(out, "c="...), adv)
				out = append(out, "\r\n"...)
				continue
			}
		case typ == 'a':
			k, v := attrKV(val)
			if isICEAttr(k) {
				continue
			}
			if k == "rtcp" && mi >= 0 {
				old, _, withAddr := parseRTCPAttr(v)
				out = append(out, "a=rtcp:"...)
				out = strconv.AppendInt(out, int64(newRTCP(old, mport, mp)), 10)
				if withAddr {
					out = appendConn(append(out, ' '), adv)
				}
				out = append(out, "\r\n"...)
				continue
			}
		}
		out = append(append(out, line...), "\r\n"...)
	}
	if pendingConn {
		out = append(append(append(out, "c="...), origSess...), "\r\n"...)
	}
	return append([]byte(nil), out...)
}

// appendConn appends "IN IP4 addr" (or IP6).
func appendConn(b []byte, a netip.Addr) []byte {
	b = append(append(append(b, "IN "...), addrType(a)...), ' ')
	return a.AppendTo(b)
}

// fields fills f with the first len(f) whitespace-separated fields of s,
// as strings.Fields splits them, and returns how many s has (at most
// len(f)+1: "more than f holds"). It does not allocate.
func fields(s string, f []string) int {
	n := 0
	for s != "" {
		i := 0
		for i < len(s) {
			c, size := rune(s[i]), 1
			if c >= utf8.RuneSelf {
				c, size = utf8.DecodeRuneInString(s[i:])
			}
			if !unicode.IsSpace(c) {
				break
			}
			i += size
		}
		s = s[i:]
		if s == "" {
			break
		}
		j := 0
		for j < len(s) {
			c, size := rune(s[j]), 1
			if c >= utf8.RuneSelf {
				c, size = utf8.DecodeRuneInString(s[j:])
			}
			if unicode.IsSpace(c) {
				break
			}
			j += size
		}
		if n == len(f) {
			return n + 1
		}
		f[n], s = s[:j], s[j:]
		n++
	}
	return n
}
