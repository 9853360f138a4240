package b2bua

import (
	"strings"
	"sync"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/emiago/sipgo/sip"
)

// Call-Info impp handling (RFC 6993 as CUSAX uses it, RFC 7081 section 3):
// the caller's XMPP address travels as
//
//	Call-Info: <xmpp:alice@example.com>;purpose=impp
//
// and, with sip.xmpp_contact, as the draft's literal form, a second Contact
// value <xmpp:alice@example.com> after the SIP one. Both are claims about
// who the caller is: from an untrusted source they are removed before the
// gateway stamps what it knows itself.
//
// sipgo parses Contact into one *sip.ContactHeader per value (a line
// "Contact: a, b" becomes two headers, serialised as two lines) and keeps
// Call-Info as a generic header holding one line's raw text, several
// comma-separated values included; that text is split here.

// stripImpp removes from req every Call-Info value whose purpose param is
// impp (case-insensitive; a Call-Info header line may carry several
// comma-separated values; commas inside <...> or quoted strings do not
// split; values with other purposes, e.g. icon/info, stay), and every
// Contact value whose URI scheme is xmpp (other Contact values stay, in
// order). It returns the bare JIDs claimed by xmpp: URIs in the removed
// impp Call-Info values and xmpp Contacts, in order (RFC 5122 form
// xmpp:alice@example.com, also xmpp://auth/alice@example.com?query and
// %-escapes; invalid ones are removed but not returned), and how many
// values were removed.
//
// A value is treated as impp when any of its purpose params says so,
// quoted or not; a Call-Info value whose <...> is not closed has its
// params read after the first ';'. A Call-Info line left without values is
// removed, one with values left keeps them on that line. After stripImpp,
// req.Contact() is the first remaining Contact (nil if none) when a
// Contact was removed; otherwise it is unchanged (sipgo: the last one).
//
// It is not safe to call concurrently with other users of req.
func stripImpp(req *sip.Request) (claims []string, removed int) {
	hs := req.Headers()
	if !mayHoldImpp(hs) {
		return nil, 0 // most requests: no list to rebuild
	}
	var kept, gone []sip.Header
	changed := false
	for _, h := range hs {
		switch name := h.Name(); {
		case nameIs(name, "Call-Info"):
			vals := splitCallInfo(h.Value())
			var keep []string
			for _, v := range vals {
				ci := parseCallInfo(v)
				if !ci.impp {
					keep = append(keep, v)
					continue
				}
				removed++
				if c, ok := xmppClaim(ci.uri); ok {
					claims = append(claims, c)
				}
			}
			switch {
			case len(keep) == len(vals):
				kept = append(kept, h)
			case len(keep) == 0:
				gone = append(gone, h)
			default:
				kept = append(kept, sip.NewHeader(name, strings.Join(keep, ", ")))
				changed = true
			}
		case isContactName(name):
			c, ok := h.(*sip.ContactHeader)
			if !ok {
				// A generic Contact (made with sip.NewHeader, never by the
				// parser): parse it to see its values.
				var keep []sip.Header
				drop := 0
				cs, err := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte("Contact: "+h.Value()))
				if err != nil {
					// Unparseable: only keep it if it cannot be an xmpp one.
					if strings.Contains(strings.ToLower(h.Value()), "xmpp") {
						gone = append(gone, h)
						removed++
					} else {
						kept = append(kept, h)
					}
					continue
				}
				for _, p := range cs {
					pc, ok := p.(*sip.ContactHeader)
					if ok && pc.Address.Scheme == "xmpp" {
						drop++
						if claim, ok := xmppClaim(pc.Address.String()); ok {
							claims = append(claims, claim)
						}
						continue
					}
					keep = append(keep, p)
				}
				if drop == 0 {
					kept = append(kept, h)
					continue
				}
				removed += drop
				gone = append(gone, h)
				kept = append(kept, keep...) // typed, in its place
				continue
			}
			if c.Address.Scheme != "xmpp" {
				kept = append(kept, h)
				continue
			}
			removed++
			gone = append(gone, h)
			if claim, ok := xmppClaim(c.Address.String()); ok {
				claims = append(claims, claim)
			}
		default:
			kept = append(kept, h)
		}
	}
	if len(gone) == 0 && !changed {
		return claims, removed
	}
	setHeaders(req, kept, gone)
	return claims, removed
}

// mayHoldImpp reports whether stripImpp could remove or change anything
// in hs: a Call-Info header, or a Contact that is not a parsed one with a
// scheme other than xmpp.
func mayHoldImpp(hs []sip.Header) bool {
	for _, h := range hs {
		switch name := h.Name(); {
		case nameIs(name, "Call-Info"):
			return true
		case isContactName(name):
			if c, ok := h.(*sip.ContactHeader); !ok || c.Address.Scheme == "xmpp" {
				return true
			}
		}
	}
	return false
}

// setHeaders makes kept (in order) the header list of req, whose current
// list is kept and gone (gone holding header objects of req that are to
// disappear; kept may hold new ones in place of old ones, or more than
// one new header for an old one as long as the old one is in gone).
//
// sipgo offers no way to replace the list, only RemoveHeader (the first
// header with a given name; it also re-points the fast-access reference of
// typed headers such as Contact to the next header of that name, or nil).
// So the live list is rewritten as gone followed by kept, then each gone
// header is removed from the front: each RemoveHeader finds its header at
// index 0, and once the last Contact in gone is removed, req.Contact() is
// the first kept Contact or nil.
func setHeaders(req *sip.Request, kept, gone []sip.Header) {
	hs := req.Headers()
	if len(gone)+len(kept) > len(hs) {
		// More headers than before (generic Contacts split into values):
		// append placeholders to grow the list; they are overwritten.
		for range len(gone) + len(kept) - len(hs) {
			req.AppendHeader(sip.NewHeader(placeholderName, ""))
		}
		hs = req.Headers()
	}
	n := copy(hs, gone)
	n += copy(hs[n:], kept)
	// len(hs) == n: every old header is in gone or represented in kept
	// once; growing above kept the count equal.
	for _, h := range gone {
		req.RemoveHeader(h.Name())
	}
}

// placeholderName names the generic headers setHeaders appends to grow the
// list; they are overwritten before anything reads them.
const placeholderName = "X-Cusax-Placeholder"

func isContactName(name string) bool {
	return nameIs(name, "Contact") || nameIs(name, "m")
}

// callInfo is one parsed Call-Info value.
type callInfo struct {
	uri  string // between < and > (trimmed), "" when not closed
	impp bool   // a purpose param says impp
}

// parseCallInfo reads one Call-Info value (RFC 3261 section 20.9):
//
//	info       = LAQUOT absoluteURI RAQUOT *( SEMI info-param)
//	info-param = ( "purpose" EQUAL ( "icon" / "info" / "card" / token ) ) / generic-param
//
// leniently: whitespace around '=' and ';', a quoted purpose value, a value
// without <...> (params after the first ';').
func parseCallInfo(v string) callInfo {
	var ci callInfo
	v = strings.TrimSpace(v)
	params := ""
	if rest, ok := strings.CutPrefix(v, "<"); ok {
		if i := strings.IndexByte(rest, '>'); i >= 0 {
			ci.uri = strings.TrimSpace(rest[:i])
			params = rest[i+1:]
		} else if i := strings.IndexByte(rest, ';'); i >= 0 {
			params = rest[i:]
		}
	} else if i := strings.IndexByte(v, ';'); i >= 0 {
		params = v[i:]
	} else {
		// Malformed (no <uri>, no parameters): read it all as a parameter,
		// so a bare "purpose=impp" is still an impp claim and is stripped.
		params = v
	}
	for _, p := range splitOutsideQuotes(params, ';') {
		name, val, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "purpose") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = strings.TrimSpace(val[1 : len(val)-1])
		}
		if strings.EqualFold(val, "impp") {
			ci.impp = true
		}
	}
	return ci
}

// splitCallInfo splits a Call-Info header line into its values at commas
// outside <...> and quoted strings (a backslash escapes the next character
// inside quotes), each trimmed, empty ones dropped. Inside <...> quotes
// mean nothing; an unclosed < or quote runs to the end.
func splitCallInfo(s string) []string {
	var out []string
	start := 0
	inQuote, inAngle, esc := false, false, false
	add := func(end int) {
		if v := strings.TrimSpace(s[start:end]); v != "" {
			out = append(out, v)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inQuote = false
			}
		case inAngle:
			if c == '>' {
				inAngle = false
			}
		case c == '"':
			inQuote = true
		case c == '<':
			inAngle = true
		case c == ',':
			add(i)
			start = i + 1
		}
	}
	add(len(s))
	return out
}

// splitOutsideQuotes splits s at sep outside quoted strings.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	start := 0
	inQuote, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// xmppClaim returns the bare JID an xmpp: URI names (RFC 5122:
// xmpp:node@domain, xmpp://authority/node@domain?query#fragment,
// %-escapes), normalised like the identity store's JIDs, or false when uri
// is not an xmpp URI of a user's JID.
func xmppClaim(uri string) (string, bool) {
	uri = strings.TrimSpace(uri)
	if len(uri) < 5 || !strings.EqualFold(uri[:5], "xmpp:") || strings.ContainsAny(uri, "<>\" \t\r\n") {
		return "", false
	}
	var n identity.Normalizer
	k, err := n.Key(uri)
	if err != nil || k.Kind != identity.KindJID {
		return "", false
	}
	return k.Value, true
}

// xmppURI returns the RFC 5122 URI of a bare JID (xmpp:node@domain), every
// octet outside RFC 3986 unreserved and the nodeallow characters
// !$()*+= percent-encoded (UTF-8 included, as RFC 5122's IRI-to-URI
// conversion does; ',' and ';' too, so that no SIP parser sees a
// separator), or false when jid is not a valid user JID.
func xmppURI(jid string) (string, bool) {
	var n identity.Normalizer
	bare, err := n.JID(jid)
	if err != nil {
		return "", false
	}
	local, domain, _ := strings.Cut(bare, "@")
	var b strings.Builder
	b.WriteString("xmpp:")
	escapeURIPart(&b, local, "!$()*+=")
	b.WriteByte('@')
	escapeURIPart(&b, domain, "")
	return b.String(), true
}

func escapeURIPart(b *strings.Builder, s, allowed string) {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', strings.IndexByte(allowed, c) >= 0:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
}

// stampImpp adds one header `Call-Info: <xmpp:JID>;purpose=impp` (JID
// escaped per RFC 5122 where needed). A jid that is not a valid user JID
// stamps nothing.
func stampImpp(req *sip.Request, jid string) {
	if v := imppValue(jid); v != "" {
		req.AppendHeader(sip.NewHeader("Call-Info", v))
	}
}

// imppValue is stampImpp's Call-Info value for jid, "" when jid is not a
// valid user JID.
func imppValue(jid string) string {
	u, ok := xmppURI(jid)
	if !ok {
		return ""
	}
	return "<" + u + ">;purpose=impp"
}

// stampImpp is the package's stampImpp with the values cached: the JID's
// validation and normalisation (PRECIS) took most of the identity work of
// a call, though the same callers call again and again.
func (b *B2BUA) stampImpp(req *sip.Request, jid string) {
	if v := b.impp.value(jid); v != "" {
		req.AppendHeader(sip.NewHeader("Call-Info", v))
	}
}

// imppCache remembers imppValue by JID: the last imppCacheSize JIDs at
// least and twice that at most, in two generations (the older dropped
// whole when the newer is full). Safe for concurrent use.
type imppCache struct {
	mu        sync.Mutex
	cur, prev map[string]string
}

const imppCacheSize = 4096

func (c *imppCache) value(jid string) string {
	c.mu.Lock()
	v, ok := c.cur[jid]
	if !ok {
		if v, ok = c.prev[jid]; ok {
			c.putLocked(jid, v)
		}
	}
	c.mu.Unlock()
	if ok {
		return v
	}
	v = imppValue(jid)
	c.mu.Lock()
	c.putLocked(jid, v)
	c.mu.Unlock()
	return v
}

func (c *imppCache) putLocked(jid, v string) {
	if c.cur == nil || len(c.cur) >= imppCacheSize {
		c.prev, c.cur = c.cur, make(map[string]string)
	}
	c.cur[jid] = v
}

// addXMPPContact appends the draft's literal form: a Contact value
// <xmpp:JID> after the SIP one (sip.xmpp_contact: true). It does nothing
// when req has no SIP Contact yet (the dialog needs one; set it first) or
// jid is not a valid user JID. req.Contact() keeps returning the SIP
// Contact when that is req's first Contact value.
func addXMPPContact(req *sip.Request, jid string) {
	u, ok := xmppURI(jid)
	if !ok {
		return
	}
	sipC, ok := sipContact(req)
	if !ok {
		return
	}
	var x sip.ContactHeader
	if err := sip.ParseUri(u, &x.Address); err != nil {
		return
	}
	// After the last Contact value (AppendHeaderAfter matches the name
	// exactly; typed Contacts are all named "Contact").
	req.AppendHeaderAfter(&x, "Contact")
	// AppendHeaderAfter points req.Contact() at the new value; ReplaceHeader
	// of the first Contact with itself points it back.
	if first, ok := req.GetHeader("Contact").(*sip.ContactHeader); ok && first == sipC {
		req.ReplaceHeader(sipC)
	}
}

// sipContact returns the first Contact value of req whose scheme is sip or
// sips (sipgo's req.Contact() returns the LAST value, which can be the xmpp
// one), or false. For a Contact added as a generic header (sip.NewHeader)
// it returns a parsed copy.
func sipContact(req *sip.Request) (*sip.ContactHeader, bool) {
	for _, h := range req.Headers() {
		if !isContactName(h.Name()) {
			continue
		}
		if c, ok := h.(*sip.ContactHeader); ok {
			if c.Address.Scheme == "sip" || c.Address.Scheme == "sips" {
				return c, true
			}
			continue
		}
		cs, err := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, []byte("Contact: "+h.Value()))
		if err != nil {
			continue
		}
		for _, p := range cs {
			if c, ok := p.(*sip.ContactHeader); ok && (c.Address.Scheme == "sip" || c.Address.Scheme == "sips") {
				return c, true
			}
		}
	}
	return nil, false
}
