package rtprelay

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// ErrBadSDP means a session description could not be parsed, not even by
// the tolerant fallback. The b2bua answers such an offer with 488.
var ErrBadSDP = errors.New("rtprelay: bad SDP")

// maxSDP bounds the size of a session description the relay accepts.
const maxSDP = 64 << 10

type direction uint8

const (
	dirSendRecv direction = iota
	dirSendOnly
	dirRecvOnly
	dirInactive
)

func parseDirection(key string) (direction, bool) {
	switch key {
	case "sendrecv":
		return dirSendRecv, true
	case "sendonly":
		return dirSendOnly, true
	case "recvonly":
		return dirRecvOnly, true
	case "inactive":
		return dirInactive, true
	}
	return 0, false
}

// mediaInfo is what the relay needs to know about one m-line.
type mediaInfo struct {
	kind     string // audio, video, image, ...
	addr     netip.Addr
	rtcpAddr netip.Addr
	port     int32  // 0: declined
	rtcpPort int32  // from a=rtcp; 0 when absent
	clock    uint32 // RTP clock rate of the first format, 0 when unknown
	anchored bool   // the relay carries this stream (UDP transport, port != 0)
	hold     bool   // c=0.0.0.0 (or ::)
	mux      bool
	dir      direction
	hasConn  bool // the m-line has its own c= (canonical path only)
}

// active reports whether media is expected to flow from and to this side.
func (m *mediaInfo) active() bool {
	return m.anchored && !m.hold && m.dir == dirSendRecv
}

// mediaPlan says where one anchored m-line now points.
type mediaPlan struct {
	rtp, rtcp int // 0: leave the m-line as it is
}

// rewritePlan is everything a rewrite needs besides the input.
type rewritePlan struct {
	addr    netip.Addr // advertised address
	sessID  uint64
	sessVer uint64
	media   []mediaPlan
}

// parsedSDP is a parsed session description; exactly one of canon, pion
// and lines is set.
type parsedSDP struct {
	media    []mediaInfo
	mediaBuf [2]mediaInfo // media's array for up to two m-lines (canonical path)
	canon    string       // the input, canonical SDP (sdp_canonical.go); refers to the caller's buffer
	pion     *sdp.SessionDescription
	lines    []sdpLine
}

type sdpLine struct {
	typ byte
	val string
}

// parseSDP parses b: canonical SDP in one pass (parseCanonical), other SDP
// with pion/sdp and, when pion rejects it, with a tolerant line-based
// parser. Errors wrap ErrBadSDP. The result may refer to b, which must not
// change while it is used.
func parseSDP(b []byte) (*parsedSDP, error) {
	p := new(parsedSDP)
	if err := p.parse(b); err != nil {
		return nil, err
	}
	return p, nil
}

// parse is parseSDP into p, which must be zero (Relay.sdps hands out
// such parsedSDPs).
func (p *parsedSDP) parse(b []byte) error {
	if len(b) > maxSDP {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrBadSDP, len(b), maxSDP)
	}
	if !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("v=")) {
		return fmt.Errorf("%w: does not start with v=", ErrBadSDP)
	}
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') || c == 0 {
			return fmt.Errorf("%w: bare CR or NUL at byte %d", ErrBadSDP, i)
		}
	}
	if p.parseCanonical(b) {
		return nil
	}
	q, err := parseNonCanonical(b)
	if err != nil {
		return err
	}
	*p = *q
	return nil
}

// parseNonCanonical is parseSDP without the canonical path.
func parseNonCanonical(b []byte) (*parsedSDP, error) {
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(b); err == nil {
		if p, err := fromPion(&sd); err == nil {
			return p, nil
		}
	}
	return parseLines(b)
}

// ----- shared helpers -----

func parseConn(v string) (addr netip.Addr, unspecified bool, err error) {
	var f [3]string
	if n := fields(v, f[:]); n < 3 || f[0] != "IN" {
		if n >= 2 && f[0] == "IN" {
			return netip.Addr{}, false, nil
		}
		return netip.Addr{}, false, fmt.Errorf("%w: c=%s", ErrBadSDP, v)
	}
	host, _, _ := strings.Cut(f[2], "/") // multicast TTL/range
	a, perr := netip.ParseAddr(host)
	if perr != nil {
		return netip.Addr{}, false, nil // FQDN: learnt by latching only
	}
	a = a.Unmap()
	return a, a.IsUnspecified(), nil
}

// parseRTCPAttr parses the value of a=rtcp: "port [IN IP4 addr]".
func parseRTCPAttr(v string) (port int, addr netip.Addr, hasAddr bool) {
	var f [4]string
	n := fields(v, f[:])
	if n == 0 {
		return 0, netip.Addr{}, false
	}
	p, err := strconv.Atoi(f[0])
	if err != nil || p < 0 || p > 65535 {
		return 0, netip.Addr{}, false
	}
	if n >= 4 {
		a, err := netip.ParseAddr(f[3])
		if err == nil {
			addr = a.Unmap()
		}
		hasAddr = true
	}
	return p, addr, hasAddr
}

func isICEAttr(key string) bool {
	switch key {
	case "candidate", "ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch",
		"ice-pacing", "end-of-candidates", "remote-candidates":
		return true
	}
	return false
}

// udpTransport reports whether the relay can carry a stream with this proto.
func udpTransport(proto string) bool {
	return !strings.HasPrefix(strings.ToUpper(proto), "TCP")
}

func parsePort(s string) (int, bool) {
	s, _, _ = strings.Cut(s, "/")
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 {
		return 0, false
	}
	return p, true
}

// staticClock is the clock rate of the static payload types of RFC 3551.
func staticClock(pt string) uint32 {
	switch pt {
	case "0", "3", "4", "5", "7", "8", "9", "12", "13", "15", "18":
		return 8000
	case "6":
		return 16000
	case "10", "11":
		return 44100
	case "14", "25", "26", "28", "31", "32", "33", "34":
		return 90000
	}
	return 0
}

// rtpmapClock returns the clock rate of an a=rtpmap value for format pt.
func rtpmapClock(v, pt string) (uint32, bool) {
	num, enc, ok := strings.Cut(v, " ")
	if !ok || num != pt {
		return 0, false
	}
	_, rate, ok := strings.Cut(enc, "/")
	if !ok {
		return 0, false
	}
	rate, _, _ = strings.Cut(rate, "/")
	r, err := strconv.ParseUint(rate, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(r), true
}

func addrType(a netip.Addr) string {
	if a.Is4() {
		return "IP4"
	}
	return "IP6"
}

func connString(a netip.Addr) string { return "IN " + addrType(a) + " " + a.String() }

func rtcpString(port int, withAddr bool, a netip.Addr) string {
	s := strconv.Itoa(port)
	if withAddr {
		s += " " + connString(a)
	}
	return s
}

// newRTCP returns the a=rtcp port for a stream whose a=rtcp named port and
// whose m= line named mport: a muxed a=rtcp (same port) stays on RTP.
func newRTCP(old, mport int, p mediaPlan) int {
	if old == mport {
		return p.rtp
	}
	return p.rtcp
}

// ----- pion path -----

func fromPion(sd *sdp.SessionDescription) (*parsedSDP, error) {
	p := &parsedSDP{pion: sd}
	var sessAddr netip.Addr
	var sessHold bool
	if c := sd.ConnectionInformation; c != nil {
		a, h, err := parseConn(c.String())
		if err != nil {
			return nil, err
		}
		sessAddr, sessHold = a, h
	}
	sessDir := dirSendRecv
	for _, a := range sd.Attributes {
		if d, ok := parseDirection(a.Key); ok {
			sessDir = d
		}
	}
	for _, md := range sd.MediaDescriptions {
		port := md.MediaName.Port.Value
		if port < 0 || port > 65535 {
			return nil, fmt.Errorf("%w: m= port %d", ErrBadSDP, port)
		}
		mi := mediaInfo{kind: md.MediaName.Media, port: int32(port), addr: sessAddr, hold: sessHold, dir: sessDir}
		mi.anchored = mi.port != 0 && udpTransport(strings.Join(md.MediaName.Protos, "/"))
		if c := md.ConnectionInformation; c != nil {
			a, h, err := parseConn(c.String())
			if err != nil {
				return nil, err
			}
			mi.addr, mi.hold = a, h
		}
		first := ""
		if len(md.MediaName.Formats) > 0 {
			first = md.MediaName.Formats[0]
			mi.clock = staticClock(first)
		}
		for _, a := range md.Attributes {
			mi.attr(a.Key, a.Value, first)
		}
		p.media = append(p.media, mi)
	}
	return p, nil
}

func (mi *mediaInfo) attr(key, val, first string) {
	if d, ok := parseDirection(key); ok {
		mi.dir = d
		return
	}
	switch key {
	case "rtcp-mux":
		mi.mux = true
	case "rtcp":
		var port int
		port, mi.rtcpAddr, _ = parseRTCPAttr(val)
		mi.rtcpPort = int32(port) // 0..65535
	case "rtpmap":
		if c, ok := rtpmapClock(val, first); ok {
			mi.clock = c
		}
	}
}

func (p *parsedSDP) rewritePion(plan *rewritePlan) ([]byte, error) {
	sd := p.pion
	adv := plan.addr
	sd.Origin = sdp.Origin{Username: "-", SessionID: plan.sessID, SessionVersion: plan.sessVer,
		NetworkType: "IN", AddressType: addrType(adv), UnicastAddress: adv.String()}
	newConn := &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType(adv), Address: &sdp.Address{Address: adv.String()}}
	origSess := sd.ConnectionInformation
	sessRewritten := false
	if c := origSess; c != nil {
		if _, hold, _ := parseConn(c.String()); !hold {
			sd.ConnectionInformation = newConn
			sessRewritten = true
		}
	}
	sd.Attributes = stripICE(sd.Attributes)
	for i, md := range sd.MediaDescriptions {
		mp := plan.media[i]
		if mp.rtp == 0 {
			if sessRewritten && md.ConnectionInformation == nil {
				md.ConnectionInformation = origSess
			}
			continue
		}
		mport := md.MediaName.Port.Value
		md.MediaName.Port = sdp.RangedPort{Value: mp.rtp}
		if c := md.ConnectionInformation; c != nil {
			if _, hold, _ := parseConn(c.String()); !hold {
				md.ConnectionInformation = newConn
			}
		}
		attrs := stripICE(md.Attributes)
		for j, a := range attrs {
			if a.Key == "rtcp" {
				old, _, withAddr := parseRTCPAttr(a.Value)
				attrs[j].Value = rtcpString(newRTCP(old, mport, mp), withAddr, adv)
			}
		}
		md.Attributes = attrs
	}
	return sd.Marshal()
}

func stripICE(as []sdp.Attribute) []sdp.Attribute {
	out := as[:0]
	for _, a := range as {
		if !isICEAttr(a.Key) {
			out = append(out, a)
		}
	}
	return out
}

// ----- line-based fallback -----

func parseLines(b []byte) (*parsedSDP, error) {
	p := &parsedSDP{}
	for n, raw := range bytes.Split(b, []byte("\n")) {
		raw = bytes.TrimRight(raw, "\r")
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		if len(raw) < 2 || raw[1] != '=' || !isLetter(raw[0]) {
			return nil, fmt.Errorf("%w: line %d: %.40q", ErrBadSDP, n+1, raw)
		}
		p.lines = append(p.lines, sdpLine{typ: raw[0], val: string(raw[2:])})
	}
	if len(p.lines) == 0 || p.lines[0].typ != 'v' || strings.TrimSpace(p.lines[0].val) != "0" {
		return nil, fmt.Errorf("%w: no v=0 first", ErrBadSDP)
	}
	var sessAddr netip.Addr
	var sessHold bool
	sessDir := dirSendRecv
	var cur *mediaInfo
	first := ""
	// Session-level lines may follow t= in sloppy SDP; collect them all first.
	for _, l := range p.lines {
		if l.typ == 'm' {
			break
		}
		switch l.typ {
		case 'c':
			a, h, err := parseConn(l.val)
			if err != nil {
				return nil, err
			}
			sessAddr, sessHold = a, h
		case 'a':
			k, _, _ := strings.Cut(l.val, ":")
			if d, ok := parseDirection(k); ok {
				sessDir = d
			}
		}
	}
	for _, l := range p.lines {
		switch {
		case l.typ == 'm':
			f := strings.Fields(l.val)
			if len(f) < 3 {
				return nil, fmt.Errorf("%w: m=%.40s", ErrBadSDP, l.val)
			}
			port, ok := parsePort(f[1])
			if !ok {
				return nil, fmt.Errorf("%w: m=%.40s", ErrBadSDP, l.val)
			}
			p.media = append(p.media, mediaInfo{kind: f[0], port: int32(port), anchored: port != 0 && udpTransport(f[2]),
				addr: sessAddr, hold: sessHold, dir: sessDir})
			cur = &p.media[len(p.media)-1]
			first = ""
			if len(f) > 3 {
				first = f[3]
				cur.clock = staticClock(first)
			}
		case cur == nil:
		case l.typ == 'c':
			a, h, err := parseConn(l.val)
			if err != nil {
				return nil, err
			}
			cur.addr, cur.hold = a, h
		case l.typ == 'a':
			k, v, _ := strings.Cut(l.val, ":")
			cur.attr(k, v, first)
		}
	}
	return p, nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// lineRank orders the lines of a section as RFC 4566 does; -1: a line type
// the fallback drops (strict parsers reject unknown types).
func lineRank(typ byte, media bool) int {
	order := "vosiuepcbtrzka"
	if media {
		order = "micbka"
	}
	if !media && typ == 'r' {
		typ = 't' // keep r= lines with their t=
	}
	return strings.IndexByte(order, typ)
}

// rewriteLines is the fallback rewriter. Besides the rewrite it normalises:
// CRLF line endings, RFC 4566 line order within each section, unknown line
// types dropped.
func (p *parsedSDP) rewriteLines(plan *rewritePlan) []byte {
	adv := plan.addr
	type outLine struct {
		rank int
		typ  byte
		val  string
	}
	var out []byte
	var sec []outLine
	media := false
	flush := func() {
		slices.SortStableFunc(sec, func(a, b outLine) int { return a.rank - b.rank })
		for _, l := range sec {
			out = append(out, l.typ, '=')
			out = append(out, l.val...)
			out = append(out, '\r', '\n')
		}
		sec = sec[:0]
	}
	add := func(typ byte, val string) {
		if r := lineRank(typ, media); r >= 0 {
			sec = append(sec, outLine{r, typ, val})
		}
	}

	var origSess string
	sessRewritten := false
	mediaConn := make([]bool, 0, len(p.media))
	for _, l := range p.lines {
		switch {
		case l.typ == 'm':
			mediaConn = append(mediaConn, false)
		case l.typ == 'c' && len(mediaConn) == 0:
			if _, hold, _ := parseConn(l.val); !hold {
				origSess, sessRewritten = l.val, true
			}
		case l.typ == 'c':
			mediaConn[len(mediaConn)-1] = true
		}
	}
	add('o', "- "+strconv.FormatUint(plan.sessID, 10)+" "+strconv.FormatUint(plan.sessVer, 10)+" "+connString(adv))
	mi := -1
	var mp mediaPlan
	mport := 0
	for _, l := range p.lines {
		switch l.typ {
		case 'o':
			if mi < 0 {
				continue // ours replaces it
			}
		case 'm':
			flush()
			media = true
			mi++
			mp = plan.media[mi]
			if mp.rtp == 0 && sessRewritten && !mediaConn[mi] {
				add('c', origSess) // a stream we leave alone keeps the address it relied on
			}
			if mp.rtp != 0 {
				f := strings.Fields(l.val)
				mport, _ = parsePort(f[1])
				f[1] = strconv.Itoa(mp.rtp)
				add('m', strings.Join(f, " "))
				continue
			}
		case 'c':
			if (mi < 0 && sessRewritten) || (mi >= 0 && mp.rtp != 0) {
				if _, hold, _ := parseConn(l.val); !hold {
					add('c', connString(adv))
					continue
				}
			}
		case 'a':
			if mi >= 0 && mp.rtp == 0 {
				break
			}
			k, v, _ := strings.Cut(l.val, ":")
			if isICEAttr(k) {
				continue
			}
			if k == "rtcp" && mi >= 0 {
				old, _, withAddr := parseRTCPAttr(v)
				add('a', "rtcp:"+rtcpString(newRTCP(old, mport, mp), withAddr, adv))
				continue
			}
		}
		add(l.typ, l.val)
	}
	flush()
	return out
}

// rewrite renders p for the other side according to plan. len(plan.media)
// must equal len(p.media).
func (p *parsedSDP) rewrite(plan *rewritePlan) ([]byte, error) {
	if len(plan.media) != len(p.media) {
		return nil, fmt.Errorf("rtprelay: internal: plan for %d streams, SDP has %d", len(plan.media), len(p.media))
	}
	switch {
	case p.canon != "":
		return p.rewriteCanonical(plan), nil
	case p.pion != nil:
		return p.rewritePion(plan)
	}
	return p.rewriteLines(plan), nil
}
