package identity

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
	"mellium.im/xmpp/jid"
)

// Limits of one identity.
const (
	MaxAORs    = 32   // SIP AORs per identity
	MaxNumbers = 32   // numbers per identity
	MaxName    = 256  // characters (runes) of a display name
	maxInput   = 4096 // bytes of any one input
)

// Normalizer turns user input (admin API, CLI, import files, SIP headers)
// into the canonical values a Store holds and looks up:
//
//   - JIDs: bare, PRECIS-prepared by mellium.im/xmpp/jid (RFC 7622: the
//     localpart case-folded, the domain lowercased), an "xmpp:" URI prefix
//     (RFC 5122) accepted.
//   - AORs: "sip:user@host" or "sips:user@host": display name, angle
//     brackets, port, URI parameters and headers dropped; scheme and host
//     lowercased; the user part kept as given (RFC 3261 compares it
//     case-sensitively) apart from percent-encoding, which is decoded where
//     RFC 3261 allows the character unescaped and uppercased elsewhere.
//   - Numbers: E.164 ("+15551230001") by libphonenumber rules, national
//     formats resolved with the default region. A number is accepted when
//     libphonenumber calls it valid, or when its length is possible for its
//     country (IsPossibleNumber): libphonenumber rejects the fictional
//     555-01xx range and whole blocks that carriers have not been allocated
//     yet, which test plans and private numbering use.
//
// Errors are *FieldError values (errors.Is(err, ErrInvalid)). A Normalizer
// is immutable and safe for concurrent use.
type Normalizer struct {
	region string // ISO 3166 region for national numbers; "" = none
}

// NewNormalizer returns a Normalizer whose national numbers (without "+")
// are read as numbers of defaultRegion, an ISO 3166-1 alpha-2 code such as
// "US" or "DE". With "" only international numbers are accepted.
func NewNormalizer(defaultRegion string) (*Normalizer, error) {
	r := strings.ToUpper(strings.TrimSpace(defaultRegion))
	if r != "" && !phonenumbers.GetSupportedRegions()[r] {
		return nil, fmt.Errorf("identity: default_region: want an ISO 3166 region such as US or DE, got %q", defaultRegion)
	}
	return &Normalizer{region: r}, nil
}

// DefaultRegion returns the region national numbers are read in ("" for
// none).
func (n *Normalizer) DefaultRegion() string { return n.region }

func invalid(field, value, msg string) error {
	return &FieldError{Field: field, Value: value, Msg: msg}
}

// JID returns the bare, PRECIS-prepared form of s ("alice@example.com").
// s may carry an "xmpp:" URI prefix; it must have a localpart and no
// resource.
func (n *Normalizer) JID(s string) (string, error) {
	return n.jid("jid", s, false)
}

func (n *Normalizer) jid(field, s string, allowResource bool) (string, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalid(field, in, "empty")
	}
	if len(s) > maxInput {
		return "", invalid(field, clip(in), "too long")
	}
	if rest, ok := cutPrefixFold(s, "xmpp:"); ok {
		// RFC 5122: xmpp:[//authority/]jid[?query][#fragment], IRI
		// percent-encoding.
		if strings.HasPrefix(rest, "//") {
			i := strings.IndexByte(rest[2:], '/')
			if i < 0 {
				return "", invalid(field, in, "xmpp URI without a JID")
			}
			rest = rest[2+i+1:]
		}
		if i := strings.IndexAny(rest, "?#"); i >= 0 {
			rest = rest[:i]
		}
		dec, err := url.PathUnescape(rest)
		if err != nil {
			return "", invalid(field, in, "bad percent-encoding in xmpp URI")
		}
		s = dec
	}
	if !utf8.ValidString(s) {
		return "", invalid(field, in, "not valid UTF-8")
	}
	j, err := parseJID(s)
	if err != nil {
		return "", invalid(field, in, "not a valid JID: "+err.Error())
	}
	if j.Localpart() == "" {
		return "", invalid(field, in, "want a user's JID (user@domain), not a domain")
	}
	if j.Resourcepart() != "" {
		if !allowResource {
			return "", invalid(field, in, "want a bare JID without a /resource")
		}
		j = j.Bare()
	}
	out := j.String()
	// PRECIS is idempotent for well-behaved input; refuse the rest rather
	// than store a value that would not look itself up.
	if again, err := parseJID(out); err != nil || again.String() != out {
		return "", invalid(field, in, "not stable under PRECIS normalisation")
	}
	return out, nil
}

// parseJID is jid.Parse with a trailing dot of the domain removed (RFC 7622
// section 3.2) and panics turned into errors.
func parseJID(s string) (j jid.JID, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unparseable: %v", r)
		}
	}()
	j, err = jid.Parse(s)
	if err != nil {
		return j, err
	}
	if d := j.Domainpart(); strings.HasSuffix(d, ".") {
		return jid.New(j.Localpart(), strings.TrimSuffix(d, "."), j.Resourcepart())
	}
	return j, nil
}

// sipURI is a parsed SIP or SIPS URI (RFC 3261 section 19.1).
type sipURI struct {
	scheme string // "sip" or "sips"
	user   string // canonical percent-encoding, password removed
	host   string // lowercase, no port
	params string // ";a=b;c" as given (without headers), lowercase
}

func (u sipURI) aor() string { return u.scheme + ":" + u.user + "@" + u.host }

// param returns the value of URI parameter name.
func (u sipURI) param(name string) (string, bool) {
	for p := range strings.SplitSeq(u.params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// AOR returns the canonical address of record of a SIP or SIPS URI:
// "sip:user@host". s may be a name-addr ("Alice" <sip:alice@host:5060>) and
// carry parameters and headers; a user part is required.
func (n *Normalizer) AOR(s string) (string, error) {
	u, err := parseSIP("sip", s)
	if err != nil {
		return "", err
	}
	return u.aor(), nil
}

func parseSIP(field, s string) (sipURI, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return sipURI{}, invalid(field, in, "empty")
	}
	if len(s) > maxInput {
		return sipURI{}, invalid(field, clip(in), "too long")
	}
	if !utf8.ValidString(s) {
		return sipURI{}, invalid(field, in, "not valid UTF-8")
	}
	// name-addr: [display-name] <URI> [;header-params]
	if i := strings.IndexByte(s, '<'); i >= 0 {
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			return sipURI{}, invalid(field, in, "unbalanced <")
		}
		s = strings.TrimSpace(s[i+1 : i+j])
	} else if strings.ContainsRune(s, '>') {
		return sipURI{}, invalid(field, in, "unbalanced >")
	}
	var u sipURI
	scheme, rest, ok := strings.Cut(s, ":")
	switch strings.ToLower(scheme) {
	case "sip", "sips":
		u.scheme = strings.ToLower(scheme)
	default:
		ok = false
	}
	if !ok {
		return sipURI{}, invalid(field, in, "want a sip: or sips: URI")
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 && !strings.Contains(rest[i:], "@") {
		rest = rest[:i] // headers (a '?' before the '@' belongs to the user)
	}
	userinfo, hostport, ok := strings.Cut(rest, "@")
	if !ok || userinfo == "" {
		return sipURI{}, invalid(field, in, "want a user part (sip:user@host)")
	}
	if i := strings.IndexByte(hostport, '?'); i >= 0 {
		hostport = hostport[:i]
	}
	// The user may contain ';' (user-unreserved); after '@' it starts params.
	if i := strings.IndexByte(hostport, ';'); i >= 0 {
		u.params = strings.ToLower(hostport[i:])
		hostport = hostport[:i]
	}
	user, _, _ := strings.Cut(userinfo, ":") // drop a password
	var err error
	if u.user, err = canonUser(user); err != nil {
		return sipURI{}, invalid(field, in, err.Error())
	}
	if u.host, err = canonHost(hostport); err != nil {
		return sipURI{}, invalid(field, in, err.Error())
	}
	return u, nil
}

// canonUser decodes percent-escapes of characters RFC 3261 allows in a user
// part unescaped and writes the others as uppercase %XX.
func canonUser(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty user part")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", fmt.Errorf("bad percent-encoding in user part")
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			if userChar(c) {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
			continue
		}
		if !userChar(c) {
			return "", fmt.Errorf("character %q not allowed in a SIP user part", rune(c))
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// userChar reports whether RFC 3261's user rule allows c unescaped:
// unreserved / user-unreserved.
func userChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()&=+$,;?/", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// canonHost lowercases a hostname or IP address and drops the port.
func canonHost(hp string) (string, error) {
	if hp == "" {
		return "", fmt.Errorf("empty host")
	}
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", fmt.Errorf("unbalanced [ in host")
		}
		if err := checkPort(hp[end+1:]); err != nil {
			return "", err
		}
		a, err := netip.ParseAddr(hp[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("bad IPv6 reference %q", hp[:end+1])
		}
		return "[" + a.String() + "]", nil
	}
	host := hp
	if i := strings.IndexByte(hp, ':'); i >= 0 {
		host = hp[:i]
		if err := checkPort(hp[i:]); err != nil {
			return "", err
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return "", fmt.Errorf("empty host")
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		return a.String(), nil
	}
	if len(host) > 253 {
		return "", fmt.Errorf("host name longer than 253 characters")
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("bad host name %q", host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", fmt.Errorf("bad host name %q", host)
			}
		}
	}
	return host, nil
}

func checkPort(s string) error {
	if s == "" {
		return nil
	}
	p, ok := strings.CutPrefix(s, ":")
	if !ok || p == "" || len(p) > 5 {
		return fmt.Errorf("bad port %q", s)
	}
	v := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return fmt.Errorf("bad port %q", s)
		}
		v = v*10 + int(p[i]-'0')
	}
	if v > 65535 {
		return fmt.Errorf("bad port %q", s)
	}
	return nil
}

// Number returns the E.164 form ("+15551230001") of a telephone number: a
// tel: URI (RFC 3966, with ";phone-context=") or a bare number with visual
// separators ("-", ".", "(", ")", space). A national number ("030 1234567")
// needs the default region or a global phone-context.
func (n *Normalizer) Number(s string) (string, error) {
	return n.number("tel", s)
}

func (n *Normalizer) number(field, s string) (string, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalid(field, in, "empty")
	}
	if len(s) > 256 {
		return "", invalid(field, clip(in), "too long")
	}
	region := n.region
	if rest, ok := cutPrefixFold(s, "tel:"); ok {
		num, params, _ := strings.Cut(rest, ";")
		s = num
		for p := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(p, "=")
			switch strings.ToLower(k) {
			case "":
			case "phone-context":
				if strings.HasPrefix(s, "+") {
					break // a global number ignores phone-context
				}
				if strings.HasPrefix(v, "+") {
					cc := stripSeparators(v)
					if !allDigits(cc[1:]) || len(cc) < 2 {
						return "", invalid(field, in, "bad phone-context")
					}
					s = cc + stripSeparators(s)
				} else if region == "" {
					return "", invalid(field, in, "local number with a domain phone-context needs identity.default_region")
				}
			case "ext", "isub":
				return "", invalid(field, in, "extensions and subaddresses are not part of an E.164 number")
			}
		}
	}
	digits := stripSeparators(s)
	if digits == "" || digits == "+" || !allDigits(strings.TrimPrefix(digits, "+")) {
		return "", invalid(field, in, "not a telephone number (want digits, an optional leading +, and separators - . ( ) space)")
	}
	if !strings.HasPrefix(digits, "+") && region == "" {
		return "", invalid(field, in, "national number needs identity.default_region, or write it as +<country code>…")
	}
	pr := region
	if pr == "" {
		pr = "ZZ"
	}
	num, err := phonenumbers.Parse(digits, pr)
	if err != nil {
		return "", invalid(field, in, "not a telephone number: "+err.Error())
	}
	if num.GetExtension() != "" {
		return "", invalid(field, in, "extensions are not part of an E.164 number")
	}
	if !phonenumbers.IsValidNumber(num) {
		switch phonenumbers.IsPossibleNumberWithReason(num) {
		case phonenumbers.IS_POSSIBLE:
		case phonenumbers.INVALID_COUNTRY_CODE:
			return "", invalid(field, in, "unknown country code")
		case phonenumbers.TOO_SHORT:
			return "", invalid(field, in, "too short for its country")
		case phonenumbers.TOO_LONG:
			return "", invalid(field, in, "too long for its country")
		case phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
			return "", invalid(field, in, "a local number: add the area code")
		default:
			return "", invalid(field, in, "not a possible number for its country")
		}
	}
	out := phonenumbers.Format(num, phonenumbers.E164)
	if len(out) < 3 || out[0] != '+' || !allDigits(out[1:]) {
		return "", invalid(field, in, "not a telephone number")
	}
	if len(out)-1 > 15 {
		// libphonenumber's possible lengths for some countries (DE)
		// exceed what E.164 allows with the country code.
		return "", invalid(field, in, "longer than the 15 digits E.164 allows")
	}
	// Refuse what would not look itself up (a value that normalises to
	// something else again).
	if again, err := phonenumbers.Parse(out, "ZZ"); err != nil || phonenumbers.Format(again, phonenumbers.E164) != out {
		return "", invalid(field, in, "not stable under E.164 normalisation")
	}
	return out, nil
}

// stripSeparators removes the visual separators of RFC 3966 and spaces.
func stripSeparators(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '-', '.', '(', ')', ' ', '\t':
			return -1
		}
		return r
	}, s)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// looksLikeNumber reports whether s is made of digits, separators and at
// most a leading '+', with at least one digit.
func looksLikeNumber(s string) bool {
	d := stripSeparators(strings.TrimSpace(s))
	d = strings.TrimPrefix(d, "+")
	return d != "" && allDigits(d)
}

// Identity returns id with every field normalised: the JID bare, AORs and
// numbers canonical and without repeats (first occurrence kept), the name
// trimmed. Errors name the field: "jid", "sip[1]", "tel[0]", "name", or
// "sip"/"tel" for too many entries. Version is kept.
func (n *Normalizer) Identity(id Identity) (Identity, error) {
	out := Identity{Version: id.Version}
	var err error
	if out.JID, err = n.JID(id.JID); err != nil {
		return Identity{}, err
	}
	if len(id.SIP) > 4*MaxAORs {
		return Identity{}, invalid("sip", fmt.Sprintf("%d entries", len(id.SIP)), fmt.Sprintf("at most %d AORs", MaxAORs))
	}
	if len(id.Tel) > 4*MaxNumbers {
		return Identity{}, invalid("tel", fmt.Sprintf("%d entries", len(id.Tel)), fmt.Sprintf("at most %d numbers", MaxNumbers))
	}
	for i, s := range id.SIP {
		u, err := parseSIP(fmt.Sprintf("sip[%d]", i), s)
		if err != nil {
			return Identity{}, err
		}
		if a := u.aor(); !contains(out.SIP, a) {
			out.SIP = append(out.SIP, a)
		}
	}
	for i, s := range id.Tel {
		t, err := n.number(fmt.Sprintf("tel[%d]", i), s)
		if err != nil {
			return Identity{}, err
		}
		if !contains(out.Tel, t) {
			out.Tel = append(out.Tel, t)
		}
	}
	if len(out.SIP) > MaxAORs {
		return Identity{}, invalid("sip", fmt.Sprintf("%d AORs", len(out.SIP)), fmt.Sprintf("at most %d AORs", MaxAORs))
	}
	if len(out.Tel) > MaxNumbers {
		return Identity{}, invalid("tel", fmt.Sprintf("%d numbers", len(out.Tel)), fmt.Sprintf("at most %d numbers", MaxNumbers))
	}
	if out.Name, err = normName(id.Name); err != nil {
		return Identity{}, err
	}
	return out, nil
}

// normName returns a display name with surrounding white space removed. It
// rejects invalid UTF-8, names longer than MaxName characters, control
// characters (C0, C1, line and paragraph separators) and bidirectional
// overrides (which can disguise a name).
func normName(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", invalid("name", s, "not valid UTF-8")
	}
	s = strings.TrimSpace(s)
	if n := utf8.RuneCountInString(s); n > MaxName {
		return "", invalid("name", clip(s), fmt.Sprintf("longer than %d characters (%d)", MaxName, n))
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' ||
			'\u202a' <= r && r <= '\u202e' || '\u2066' <= r && r <= '\u2069' {
			return "", invalid("name", s, fmt.Sprintf("control character %U not allowed", r))
		}
	}
	return s, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Key returns the lookup key of any address a user or peer may give:
// "xmpp:alice@example.com" or a JID (KindJID; a resource is dropped),
// "sip:"/"sips:" URIs including name-addr forms (KindAOR), "tel:" URIs
// and bare numbers (KindTel). Errors name the field "uri".
//
// A SIP URI always gives its AOR key; NumberKeyFromAOR derives the number
// key of a SIP URI whose user part is a telephone number.
func (n *Normalizer) Key(s string) (Key, error) {
	t := strings.TrimSpace(s)
	if len(t) > maxInput {
		return Key{}, invalid("uri", clip(s), "too long")
	}
	if i := strings.IndexByte(t, '<'); i >= 0 {
		// A name-addr: "Alice" <sip:alice@example.com>;tag=1, <tel:+1555…>.
		j := strings.IndexByte(t[i:], '>')
		if j < 0 {
			return Key{}, invalid("uri", s, "unbalanced <")
		}
		t = strings.TrimSpace(t[i+1 : i+j])
		if strings.ContainsAny(t, "<>") {
			return Key{}, invalid("uri", s, "nested <")
		}
	}
	low := strings.ToLower(t)
	switch {
	case t == "":
		return Key{}, invalid("uri", s, "empty")
	case strings.HasPrefix(low, "xmpp:"):
		v, err := n.jid("uri", t, true)
		return Key{KindJID, v}, err
	case strings.HasPrefix(low, "tel:"):
		v, err := n.number("uri", t)
		return Key{KindTel, v}, err
	case strings.HasPrefix(low, "sip:"), strings.HasPrefix(low, "sips:"):
		u, err := parseSIP("uri", t)
		return Key{KindAOR, u.aor()}, err
	case looksLikeNumber(t):
		v, err := n.number("uri", t)
		return Key{KindTel, v}, err
	case strings.Contains(t, "@"):
		v, err := n.jid("uri", t, true)
		return Key{KindJID, v}, err
	}
	return Key{}, invalid("uri", clip(s), "want a JID, an xmpp:, sip:, sips: or tel: URI, or a telephone number")
}

// NumberKeyFromAOR returns the number key of a SIP URI whose user part is a
// telephone number: "sip:+15551230001@pbx;user=phone", or a user made of
// digits and separators ("sip:0301234567@pbx" with default region DE,
// "sip:+15551230001@pbx"). With user=phone the user part is read as a
// telephone-subscriber (RFC 3261 19.1.6: separators and ";phone-context="
// allowed). ok is false when the user part is not a number this
// Normalizer can resolve (an extension such as "sip:100@pbx", a national
// number without default region).
func (n *Normalizer) NumberKeyFromAOR(aor string) (Key, bool) {
	u, err := parseSIP("sip", aor)
	if err != nil {
		return Key{}, false
	}
	user, err := url.PathUnescape(u.user)
	if err != nil {
		return Key{}, false
	}
	if v, _ := u.param("user"); v == "phone" {
		t, err := n.number("sip", "tel:"+user)
		if err != nil {
			return Key{}, false
		}
		return Key{KindTel, t}, true
	}
	if !looksLikeNumber(user) {
		return Key{}, false
	}
	t, err := n.number("sip", user)
	if err != nil {
		return Key{}, false
	}
	return Key{KindTel, t}, true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// clip shortens a value quoted in an error.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	cut := 80
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
