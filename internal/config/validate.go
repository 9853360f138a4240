package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nyaruka/phonenumbers"
	"github.com/redis/go-redis/v9"
	"mellium.im/xmpp/jid"
)

// SIPListener is one parsed entry of sip.listen.
type SIPListener struct {
	Network string // udp|tcp|tls|ws|wss
	Addr    string // host:port
}

// ParseSIPListener parses a sip.listen entry such as "udp://0.0.0.0:5060".
func ParseSIPListener(s string) (SIPListener, error) {
	scheme, addr, ok := strings.Cut(s, "://")
	if !ok {
		return SIPListener{}, fmt.Errorf("want scheme://host:port (udp, tcp, tls, ws or wss), got %q", s)
	}
	switch scheme {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return SIPListener{}, fmt.Errorf("unknown transport %q (want udp, tcp, tls, ws or wss) in %q", scheme, s)
	}
	if err := checkHostPort(addr, false); err != nil {
		return SIPListener{}, fmt.Errorf("%v in %q", err, s)
	}
	return SIPListener{Network: scheme, Addr: addr}, nil
}

// LeaseEnabled reports whether the component runs under a Redis lease
// (xmpp.lease): redis, or auto with identity.backend redis and no
// xmpp.ejabberd_api (ejabberd balances several connections of one
// component, so every instance connects there).
func (c *Config) LeaseEnabled() bool {
	switch c.XMPP.Lease {
	case "redis":
		return true
	case "auto":
		return c.Identity.Backend == "redis" && c.XMPP.EjabberdAPI == ""
	}
	return false
}

// C2SAddr returns the address `cusax-gw check` probes for the XMPP server's
// client TLS (xmpp.c2s, by default the host of xmpp.server on port 5222),
// or "" when xmpp.c2s is "off".
func (c *Config) C2SAddr() string {
	switch c.XMPP.C2S {
	case "off":
		return ""
	case "":
		host, _, err := net.SplitHostPort(c.XMPP.Server)
		if err != nil {
			return ""
		}
		return net.JoinHostPort(host, "5222")
	}
	return c.XMPP.C2S
}

// SIPListeners returns sip.listen parsed. Validate guarantees it succeeds.
func (c *Config) SIPListeners() []SIPListener {
	var out []SIPListener
	for _, s := range c.SIP.Listen {
		if l, err := ParseSIPListener(s); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// PBXURI returns sip.pbx parsed. Validate guarantees it succeeds.
func (c *Config) PBXURI() sip.Uri {
	var u sip.Uri
	_ = sip.ParseUri(c.SIP.PBX, &u)
	return u
}

// TrustedPrefixes returns sip.trusted parsed; a bare address is a /32 or
// /128. Validate guarantees every entry parses.
func (c *Config) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.SIP.Trusted {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// UsesRedis reports whether any part of the gateway talks to Redis.
func (c *Config) UsesRedis() bool { return c.Identity.Backend == "redis" }

func (c *Config) errorf(path, format string, args ...any) *Error {
	return &Error{File: c.file, Line: c.lines[path], Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks every value and returns all problems at once (joined with
// errors.Join, one *Error each naming the YAML path, line and bad value), or
// nil.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, c.errorf(path, format, args...))
	}
	oneOf := func(path, got string, allowed ...string) {
		for _, a := range allowed {
			if got == a {
				return
			}
		}
		bad(path, "must be one of %s, got %q", strings.Join(allowed, "|"), got)
	}

	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "json", "text")

	if err := checkHostPort(c.Admin.Listen, false); err != nil {
		bad("admin.listen", "%v", err)
	}

	oneOf("identity.backend", c.Identity.Backend, "embedded", "redis")
	switch c.Identity.Backend {
	case "embedded":
		if c.Identity.Path == "" {
			bad("identity.path", "must name the embedded store file when identity.backend is embedded")
		}
	case "redis":
		if err := checkRedisURL(c.Identity.Redis.URL.Reveal()); err != nil {
			bad("identity.redis.url", "%v", err)
		}
	}
	if r := c.Identity.DefaultRegion; r != "" && !phonenumbers.GetSupportedRegions()[r] {
		bad("identity.default_region", "must be an ISO 3166 region code such as US or DE, got %q", r)
	}

	if j, err := jid.Parse(c.XMPP.Component); err != nil || c.XMPP.Component == "" || j.Localpart() != "" || j.Resourcepart() != "" {
		bad("xmpp.component", "must be a domain JID such as cusax.example.com, got %q", c.XMPP.Component)
	}
	if err := checkHostPort(c.XMPP.Server, true); err != nil {
		bad("xmpp.server", "%v", err)
	}
	if j, err := jid.Parse(c.XMPP.Domain); err != nil || c.XMPP.Domain == "" || j.Localpart() != "" || j.Resourcepart() != "" {
		bad("xmpp.domain", "must be the users' XMPP domain such as example.com, got %q", c.XMPP.Domain)
	} else if c.XMPP.Domain == c.XMPP.Component {
		bad("xmpp.component", "must differ from xmpp.domain, got %q for both", c.XMPP.Component)
	}
	if a := c.XMPP.EjabberdAPI; a != "" {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("xmpp.ejabberd_api", "must be an http(s) URL such as http://127.0.0.1:5280/api, got %q", a)
		}
	}
	if a := c.XMPP.C2S; a != "" && a != "off" {
		if err := checkHostPort(a, true); err != nil {
			bad("xmpp.c2s", "%v (or \"off\")", err)
		}
	}
	oneOf("xmpp.sync.vcard", c.XMPP.Sync.VCard, "enforce", "fill", "off")
	oneOf("xmpp.lease", c.XMPP.Lease, "auto", "redis", "off")
	if c.XMPP.Lease == "redis" && c.Identity.Backend != "redis" {
		bad("xmpp.lease", "redis needs identity.backend redis, got %q", c.Identity.Backend)
	}
	if c.XMPP.Sync.Interval.D() < time.Minute {
		bad("xmpp.sync.interval", "must be at least 1m, got %s", c.XMPP.Sync.Interval)
	}

	if len(c.SIP.Listen) == 0 {
		bad("sip.listen", "must name at least one listener such as udp://0.0.0.0:5060")
	}
	needTLS := false
	for i, s := range c.SIP.Listen {
		l, err := ParseSIPListener(s)
		if err != nil {
			bad(fmt.Sprintf("sip.listen[%d]", i), "%v", err)
			continue
		}
		needTLS = needTLS || l.Network == "tls" || l.Network == "wss"
	}
	if needTLS && (c.SIP.TLS.CertFile == "" || c.SIP.TLS.KeyFile == "") {
		e := c.errorf("sip.tls", "cert_file and key_file must both be set for tls:// and wss:// listeners, got cert_file %q key_file %q", c.SIP.TLS.CertFile, c.SIP.TLS.KeyFile)
		if e.Line == 0 {
			e.Line = c.lines["sip.listen"]
		}
		errs = append(errs, e)
	}
	if a := c.SIP.Advertise; a != "" {
		if ip, err := netip.ParseAddr(a); (err == nil && ip.IsUnspecified()) || !validHost(a) {
			bad("sip.advertise", "must be the address or host name the PBX and phones reach the gateway at, got %q", a)
		}
	}
	if !validHost(c.SIP.Domain) {
		bad("sip.domain", "must be the host part of the users' AORs such as example.com, got %q", c.SIP.Domain)
	}
	var pbx sip.Uri
	if err := sip.ParseUri(c.SIP.PBX, &pbx); err != nil || (pbx.Scheme != "sip" && pbx.Scheme != "sips") || pbx.Host == "" {
		bad("sip.pbx", "must be a SIP URI such as sip:127.0.0.1:5070, got %q", c.SIP.PBX)
	} else if t := pbx.UriParams.GetOr("transport", "udp"); t != "udp" && t != "tcp" && t != "tls" && t != "ws" && t != "wss" {
		bad("sip.pbx", "unknown transport %q in %q", t, c.SIP.PBX)
	}
	for i, s := range c.SIP.Trusted {
		if _, err := parsePrefix(s); err != nil {
			bad(fmt.Sprintf("sip.trusted[%d]", i), "must be an address or CIDR prefix such as 127.0.0.1/32, got %q", s)
		}
	}
	oneOf("sip.auth", c.SIP.Auth, "passthrough", "local")
	if len(c.SIP.AuthAlgorithms) == 0 {
		bad("sip.auth_algorithms", "must name at least one of SHA-256, MD5")
	}
	seenAlg := map[string]bool{}
	for i, a := range c.SIP.AuthAlgorithms {
		if a != "SHA-256" && a != "MD5" {
			bad(fmt.Sprintf("sip.auth_algorithms[%d]", i), "must be SHA-256 or MD5, got %q", a)
		} else if seenAlg[a] {
			bad(fmt.Sprintf("sip.auth_algorithms[%d]", i), "%s is listed twice", a)
		}
		seenAlg[a] = true
	}
	oneOf("sip.call_info", c.SIP.CallInfo, "stamp", "off")
	if c.SIP.MaxCalls < 0 {
		bad("sip.max_calls", "must not be negative (0: unlimited), got %d", c.SIP.MaxCalls)
	}
	if c.SIP.MaxCPS < 0 {
		bad("sip.max_cps", "must not be negative (0: unlimited), got %d", c.SIP.MaxCPS)
	}
	if c.SIP.RateLimit < 0 {
		bad("sip.rate_limit", "must not be negative (0: unlimited), got %d", c.SIP.RateLimit)
	}
	if c.SIP.MaxDuration.D() < 0 {
		bad("sip.max_duration", "must not be negative (0: unlimited), got %s", c.SIP.MaxDuration)
	}
	if c.SIP.PBXPing.D() < 0 {
		bad("sip.pbx_ping", "must not be negative (0: no pings), got %s", c.SIP.PBXPing)
	}
	if c.SIP.UDPReceiveBuffer < 0 {
		bad("sip.udp_receive_buffer", "must not be negative (0: the kernel's default), got %d", c.SIP.UDPReceiveBuffer)
	}
	if d := c.SIP.TransactionLinger.D(); d < time.Second || d > 32*time.Second {
		bad("sip.transaction_linger", "must be between 1s and 32s, got %s", c.SIP.TransactionLinger)
	}
	if d := c.SIP.AcceptedLinger.D(); d < 100*time.Millisecond || d > 32*time.Second {
		bad("sip.accepted_linger", "must be between 100ms and 32s, got %s", c.SIP.AcceptedLinger)
	}
	if c.SIP.RingTimeout.D() <= 0 {
		bad("sip.ring_timeout", "must be positive, got %s", c.SIP.RingTimeout)
	}

	if _, err := netip.ParseAddr(c.RTP.Listen); err != nil {
		bad("rtp.listen", "must be an IP address such as 0.0.0.0, got %q", c.RTP.Listen)
	}
	if a := c.RTP.Advertise; a != "" {
		if ip, err := netip.ParseAddr(a); err != nil || ip.IsUnspecified() {
			bad("rtp.advertise", "must be the IP address written into SDP, got %q", a)
		}
	}
	lo, hi := c.RTP.PortMin, c.RTP.PortMax
	switch {
	case lo < 1024 || hi > 65535:
		bad("rtp.port_min", "ports must lie in 1024..65535, got %d..%d", lo, hi)
	case lo%2 != 0 || lo >= hi:
		bad("rtp.port_min", "must be even and < port_max, got %d..%d", lo, hi)
	}
	if c.RTP.Timeout.D() <= 0 {
		bad("rtp.timeout", "must be positive, got %s", c.RTP.Timeout)
	}
	if c.RTP.HoldTimeout.D() < 0 {
		bad("rtp.hold_timeout", "must not be negative, got %s", c.RTP.HoldTimeout)
	}
	if c.RTP.Quarantine.D() <= 0 {
		bad("rtp.quarantine", "must be positive, got %s", c.RTP.Quarantine)
	}
	switch qs := c.RTP.QuarantineSilent.D(); {
	case qs <= 0:
		bad("rtp.quarantine_silent", "must be positive, got %s", c.RTP.QuarantineSilent)
	case qs > c.RTP.Quarantine.D() && c.RTP.Quarantine.D() > 0:
		bad("rtp.quarantine_silent", "must not exceed rtp.quarantine (%s), got %s", c.RTP.Quarantine, c.RTP.QuarantineSilent)
	}
	oneOf("rtp.engine", c.RTP.Engine, "goroutine", "epoll")
	if c.RTP.Workers < 0 || c.RTP.Workers > 256 {
		bad("rtp.workers", "must be 0 (one per CPU) to 256, got %d", c.RTP.Workers)
	}
	oneOf("rtp.backend", c.RTP.Backend, "embedded", "rtpengine")
	if c.RTP.Backend == "rtpengine" {
		if err := checkHostPort(c.RTP.Rtpengine.NG, true); err != nil {
			bad("rtp.rtpengine.ng", "%v", err)
		}
	}

	switch g := c.Runtime.GCPercent; {
	case g == -1 && c.Runtime.MemoryLimit <= 0:
		bad("runtime.gc_percent", "-1 (collect only at the memory limit) needs runtime.memory_limit")
	case g != -1 && g < 10:
		bad("runtime.gc_percent", "must be at least 10, or -1 with runtime.memory_limit, got %d", g)
	}
	if c.Runtime.MemoryLimit < 0 {
		bad("runtime.memory_limit", "must not be negative (0: no limit), got %d", c.Runtime.MemoryLimit)
	}
	if c.Shutdown.Drain.D() < 0 {
		bad("shutdown.drain", "must not be negative, got %s", c.Shutdown.Drain)
	}
	// Report in file order; values from defaults or the environment last.
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].(*Error).Line, errs[j].(*Error).Line
		return li != 0 && (lj == 0 || li < lj)
	})
	return errors.Join(errs...)
}

// Warnings returns problems that do not stop the daemon but that an
// operator should see (printed by cusax-gw check).
func (c *Config) Warnings() []string {
	var w []string
	if c.XMPP.Secret == "" {
		w = append(w, "xmpp.secret: empty; the component handshake will fail (set xmpp.secret_file or CUSAX_XMPP_SECRET)")
	}
	if c.Admin.Token == "" {
		w = append(w, "admin.token: empty; /api/ answers 401 to everyone (set admin.token_file or CUSAX_ADMIN_TOKEN)")
	}
	if ip, err := netip.ParseAddr(c.RTP.Listen); err == nil && ip.IsUnspecified() && c.RTP.Advertise == "" {
		w = append(w, "rtp.advertise: empty while rtp.listen is "+c.RTP.Listen+"; SDP will carry the address of the interface toward each peer")
	}
	return w
}

func checkHostPort(s string, needHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", s)
	}
	if needHost && host == "" {
		return fmt.Errorf("want host:port with a host, got %q", s)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("invalid host %q in %q", host, s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port must be 1..65535, got %q", port)
	}
	return nil
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkRedisURL accepts what the identity store will hand to go-redis:
// redis://, rediss:// and unix:// URLs, and Sentinel as a redis:// URL with
// master_name (and further sentinels as addr) in the query.
func checkRedisURL(s string) error {
	const want = "want a URL such as redis://127.0.0.1:6379/0"
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's error echoes the URL, which may carry a password.
		return errors.New(want + " (unparseable)")
	}
	if u.Query().Has("master_name") {
		_, err = redis.ParseFailoverURL(s)
	} else {
		_, err = redis.ParseURL(s)
	}
	if err != nil {
		return fmt.Errorf("%s: %s", want, strings.TrimPrefix(err.Error(), "redis: "))
	}
	return nil
}
