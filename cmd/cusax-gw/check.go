package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/component"
	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/check"
	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// probeTimeout bounds each probe of `cusax-gw check`.
const probeTimeout = 8 * time.Second

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("check", stderr)
	path := fs.String("config", "config.yaml", "configuration `file`")
	offline := fs.Bool("offline", false, "validate the configuration only; probe nothing")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*path, stderr, getenv)
	if !ok {
		return exitUsage
	}
	fmt.Fprintf(stdout, "PASS  config  %s is valid\n", *path)
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "WARN  config  %s\n", w)
	}
	if *offline {
		return exitOK
	}
	quietLibraries(discardLogger())
	results := check.Run(ctx, probes(cfg), probeTimeout)
	if !check.Print(stdout, results) {
		return exitFailure
	}
	return exitOK
}

// probes returns the probes for cfg in the order they are printed. Each
// subsystem contributes its own; this list is where they meet.
func probes(cfg *config.Config) []check.Probe {
	ps := []check.Probe{
		{Name: "admin", Run: func(ctx context.Context) (string, error) { return probeAdmin(ctx, cfg) }},
	}
	for _, l := range cfg.SIPListeners() {
		ps = append(ps, check.Probe{Name: "sip-listen", Run: func(ctx context.Context) (string, error) {
			return probeBind(ctx, cfg, l.Network, l.Addr)
		}})
	}
	if cfg.RTP.Backend == "rtpengine" {
		ps = append(ps, check.Probe{Name: "rtpengine", Run: func(ctx context.Context) (string, error) {
			ng, err := rtprelay.NewNGClient(cfg.RTP.Rtpengine.NG, rtprelay.NGOptions{})
			if err != nil {
				return "", fmt.Errorf("rtp.rtpengine.ng: %w", err)
			}
			defer ng.Close()
			if err := ng.Ping(ctx); err != nil {
				return "", fmt.Errorf("rtpengine at %s: %w", cfg.RTP.Rtpengine.NG, err)
			}
			return "rtpengine at " + cfg.RTP.Rtpengine.NG + " answered ping", nil
		}})
	} else {
		ps = append(ps, check.Probe{Name: "rtp-ports", Run: func(context.Context) (string, error) { return probeRTPPorts(cfg) }})
	}
	ps = append(ps, check.Probe{Name: "xmpp", Run: func(ctx context.Context) (string, error) { return probeXMPP(ctx, cfg) }})
	if addr := cfg.C2SAddr(); addr != "" {
		ps = append(ps, check.Probe{Name: "tls", Run: func(ctx context.Context) (string, error) {
			return probeTLSConsistency(ctx, cfg, addr)
		}})
	}
	if cfg.UsesRedis() {
		ps = append(ps, check.Probe{Name: "redis", Run: func(ctx context.Context) (string, error) { return probeRedis(ctx, cfg) }})
	}
	ps = append(ps, check.Probe{Name: "pbx", Run: func(ctx context.Context) (string, error) {
		code, reason, err := b2bua.ProbePBX(ctx, cfg.SIP.PBX, "cusax-gw-check/"+version)
		switch {
		case err != nil:
			return "", err
		case code >= 500 || code == 408:
			return "", fmt.Errorf("%s answered OPTIONS with %d %s", cfg.SIP.PBX, code, reason)
		}
		return fmt.Sprintf("%s answered OPTIONS with %d %s", cfg.SIP.PBX, code, reason), nil
	}})
	return ps
}

// probeAdmin checks that admin.listen can be bound, or is already served
// by a running cusax-gw.
func probeAdmin(ctx context.Context, cfg *config.Config) (string, error) {
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err == nil {
		ln.Close()
		return cfg.Admin.Listen + " can be bound", nil
	}
	if running(ctx, cfg) {
		return cfg.Admin.Listen + " is served by a running cusax-gw", nil
	}
	return "", fmt.Errorf("admin.listen %s cannot be bound: %w", cfg.Admin.Listen, unwrapOp(err))
}

// running reports whether a cusax-gw answers /healthz on admin.listen.
func running(ctx context.Context, cfg *config.Config) bool {
	_, ok := runningHealth(ctx, cfg)
	return ok
}

// runningHealth returns the subsystem states a running cusax-gw reports on
// admin.listen, and whether one answered.
func runningHealth(ctx context.Context, cfg *config.Config) (map[string]struct{ State, Detail string }, bool) {
	host, port, _ := net.SplitHostPort(cfg.Admin.Listen)
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return nil, false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, false
	}
	defer res.Body.Close()
	var body struct {
		Subsystems map[string]struct{ State, Detail string } `json:"subsystems"`
	}
	ok := res.StatusCode == 200 && json.NewDecoder(io.LimitReader(res.Body, 1<<16)).Decode(&body) == nil && body.Subsystems != nil
	return body.Subsystems, ok
}

func probeBind(ctx context.Context, cfg *config.Config, network, addr string) (string, error) {
	name := network + "://" + addr
	var err error
	if network == "udp" {
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", addr); err == nil {
			c.Close()
		}
	} else {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			ln.Close()
		}
	}
	if err == nil {
		return name + " can be bound", nil
	}
	if running(ctx, cfg) {
		return name + " is in use, by the running cusax-gw", nil
	}
	return "", fmt.Errorf("sip.listen %s cannot be bound: %w", name, unwrapOp(err))
}

func probeRTPPorts(cfg *config.Config) (string, error) {
	listen, _ := netip.ParseAddr(cfg.RTP.Listen)
	if _, _, err := rtprelay.ProbePorts(listen, cfg.RTP.PortMin, cfg.RTP.PortMax); err != nil {
		return "", err
	}
	return fmt.Sprintf("all %d UDP ports %d..%d can be bound on %s", cfg.RTP.PortMax-cfg.RTP.PortMin+1, cfg.RTP.PortMin, cfg.RTP.PortMax, listen), nil
}

// probeXMPP connects as the component and reports the XEP-0356 grants.
func probeXMPP(ctx context.Context, cfg *config.Config) (string, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", cfg.XMPP.Server)
	if err != nil {
		return "", fmt.Errorf("xmpp.server %s unreachable: %w", cfg.XMPP.Server, unwrapOp(err))
	}
	c.Close()
	if cfg.XMPP.Secret == "" {
		return "", fmt.Errorf("xmpp.server %s reachable, but xmpp.secret is empty: no handshake possible", cfg.XMPP.Server)
	}
	priv, err := component.Probe(ctx, component.Config{
		JID: cfg.XMPP.Component, Server: cfg.XMPP.Server,
		Secret: component.Secret(cfg.XMPP.Secret.Reveal()), Domain: cfg.XMPP.Domain, Version: version,
	})
	if err != nil {
		var he *component.HandshakeError
		if errors.As(err, &he) && he.Condition == "conflict" {
			if subs, ok := runningHealth(ctx, cfg); ok && subs["xmpp"].State == "up" {
				return fmt.Sprintf("%s is connected as %s by the running cusax-gw (the server refused this probe's second connection)", cfg.XMPP.Server, cfg.XMPP.Component), nil
			}
			return "", fmt.Errorf("%w (another connection holds %s)", err, cfg.XMPP.Component)
		}
		return "", err
	}
	plan := component.PlanWrites(priv, syncConfig(cfg))
	msg := fmt.Sprintf("handshake with %s as %s ok; %s; write paths %s", cfg.XMPP.Server, cfg.XMPP.Component, describePrivileges(priv), plan)
	if plan.Reach == component.PathEjabberdAPI || plan.VCard == component.PathEjabberdAPI {
		if err := component.ProbeEjabberdAPI(ctx, cfg.XMPP.EjabberdAPI, nil); err != nil {
			return "", fmt.Errorf("%s; xmpp.ejabberd_api: %w", msg, err)
		}
	}
	if plan.Reach == component.PathNone || plan.VCard == component.PathNone {
		return "", fmt.Errorf("%s: no write path for what xmpp.sync enables (grant IQ permission for pubsub/vCard, or set xmpp.ejabberd_api)", msg)
	}
	return msg, nil
}

func describePrivileges(p component.Privileges) string {
	if p.Version == 0 {
		return "no XEP-0356 privileges granted (reach and vCard sync impossible)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "XEP-0356 urn:xmpp:privilege:%d: roster=%s message=%s presence=%s", p.Version,
		orNone(p.Roster), orNone(p.Message), orNone(p.Presence))
	var ns []string
	for k, v := range p.IQ {
		ns = append(ns, k+"="+v)
	}
	sort.Strings(ns)
	if len(ns) == 0 {
		b.WriteString(" iq=none")
	} else {
		b.WriteString(" iq: " + strings.Join(ns, " "))
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func probeRedis(ctx context.Context, cfg *config.Config) (string, error) {
	store, err := identity.OpenRedis(cfg.Identity.Redis.URL.Reveal(), identity.RedisOptions{KeyPrefix: cfg.Identity.Redis.KeyPrefix})
	if err != nil {
		return "", fmt.Errorf("identity.redis.url: %w", err)
	}
	defer store.Close()
	if err := store.Client().Ping(ctx).Err(); err != nil {
		return "", fmt.Errorf("redis PING failed: %w", err)
	}
	return "PING answered", nil
}

// unwrapOp drops the *net.OpError prefix, which repeats the address.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// probeTLSConsistency compares the TLS of the two sides a CUSAX client
// talks to: the SIP listeners and the XMPP server's client port. RFC 7081
// section 5: a client that gets TLS on one side but not the other is open
// to a downgrade (its SIP digest, caller identities and media keys in the
// clear next to an encrypted chat, or the reverse). A mismatch is a
// warning, not a failure: the operator may terminate TLS elsewhere (an SBC,
// a TLS proxy), which this probe cannot see.
func probeTLSConsistency(ctx context.Context, cfg *config.Config, c2s string) (string, error) {
	var sipTLS, sipPlain []string
	for _, l := range cfg.SIPListeners() {
		if l.Network == "tls" || l.Network == "wss" {
			sipTLS = append(sipTLS, l.Network+"://"+l.Addr)
		} else {
			sipPlain = append(sipPlain, l.Network+"://"+l.Addr)
		}
	}
	mode, err := probeC2STLS(ctx, c2s, cfg.XMPP.Domain)
	if err != nil {
		return "", check.Warnf("cannot compare SIP and XMPP TLS: XMPP client port %s (xmpp.c2s): %v (set xmpp.c2s to the client port, or off)", c2s, err)
	}
	xmpp := fmt.Sprintf("XMPP clients at %s get %s", c2s, mode)
	switch {
	case mode.secure() && len(sipTLS) == 0:
		return "", check.Warnf("downgrade risk (RFC 7081 section 5): %s, but sip.listen has no tls:// or wss:// listener, so the same clients send SIP (digest authentication, caller identity) in cleartext; add a tls:// listener (sip.tls.cert_file, key_file)", xmpp)
	case !mode.secure() && len(sipTLS) > 0:
		return "", check.Warnf("downgrade risk (RFC 7081 section 5): SIP offers TLS (%s), but %s, so the same clients log in to XMPP in cleartext; enable TLS on the XMPP server", strings.Join(sipTLS, " "), xmpp)
	case mode.secure():
		msg := fmt.Sprintf("SIP (%s) and XMPP both offer TLS; %s", strings.Join(sipTLS, " "), xmpp)
		if len(sipPlain) > 0 {
			msg += "; SIP also accepts cleartext on " + strings.Join(sipPlain, " ")
		}
		return msg, nil
	}
	return fmt.Sprintf("neither SIP nor XMPP offers TLS (%s): consistent, but safe only on a trusted network", xmpp), nil
}

// c2sTLS is how an XMPP server's client port offers TLS.
type c2sTLS string

const (
	c2sPlain            c2sTLS = "no TLS"
	c2sStartTLS         c2sTLS = "STARTTLS (optional)"
	c2sStartTLSRequired c2sTLS = "STARTTLS (required)"
	c2sDirectTLS        c2sTLS = "direct TLS"
)

func (m c2sTLS) secure() bool { return m != c2sPlain }

const (
	nsStreams = "http://etherx.jabber.org/streams"
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
)

// probeC2STLS opens a client stream (RFC 6120) to addr for domain and reads
// the stream features: STARTTLS offered, required, or absent. When the port
// does not speak XMPP in the clear, it tries a TLS handshake (direct TLS,
// XEP-0368). It sends no credentials and closes the stream after the
// features.
func probeC2STLS(ctx context.Context, addr, domain string) (c2sTLS, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", unwrapOp(err)
	}
	mode, err := c2sFeatures(ctx, c, domain)
	if err == nil || ctx.Err() != nil {
		return mode, err
	}
	var se *streamError
	if errors.As(err, &se) {
		return "", err
	}
	// Not an XMPP stream in the clear: perhaps direct TLS. The handshake only
	// tells whether TLS is spoken; whether clients trust the certificate is
	// the XMPP server's business, so it is not verified here.
	tc, terr := (&tls.Dialer{Config: &tls.Config{
		ServerName: domain, InsecureSkipVerify: true, NextProtos: []string{"xmpp-client"},
	}}).DialContext(ctx, "tcp", addr)
	if terr != nil {
		return "", fmt.Errorf("%w (and no TLS handshake either: %v)", err, unwrapOp(terr))
	}
	tc.Close()
	return c2sDirectTLS, nil
}

// streamError is a <stream:error/> the server answered with.
type streamError struct{ Condition string }

func (e *streamError) Error() string { return "stream error " + e.Condition }

// c2sFeatures sends a stream header on c and reads up to the end of the
// stream features. It closes c.
func c2sFeatures(ctx context.Context, c net.Conn, domain string) (c2sTLS, error) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var to strings.Builder
	if err := xml.EscapeText(&to, []byte(domain)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' xmlns:stream='%s'>", to.String(), nsStreams); err != nil {
		return "", err
	}
	dec := xml.NewDecoder(io.LimitReader(c, 1<<16))
	depth := 0 // 1: inside stream, 2: inside features or error
	var inFeatures, inError, starttls, required bool
	for {
		tok, err := dec.Token()
		if err != nil {
			if depth == 0 {
				return "", fmt.Errorf("no XMPP stream: %w", err)
			}
			return "", fmt.Errorf("stream ended before its features: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case depth == 1:
				if t.Name.Space != nsStreams || t.Name.Local != "stream" {
					return "", fmt.Errorf("no XMPP stream: got <%s>", t.Name.Local)
				}
			case depth == 2 && t.Name.Space == nsStreams && t.Name.Local == "features":
				inFeatures = true
			case depth == 2 && t.Name.Space == nsStreams && t.Name.Local == "error":
				inError = true
			case depth == 3 && inError:
				return "", &streamError{Condition: t.Name.Local}
			case depth == 3 && inFeatures && t.Name.Space == nsTLS && t.Name.Local == "starttls":
				starttls = true
			case depth == 4 && starttls && t.Name.Space == nsTLS && t.Name.Local == "required":
				required = true
			}
		case xml.EndElement:
			depth--
			if depth == 1 && inFeatures {
				_, _ = io.WriteString(c, "</stream:stream>")
				switch {
				case required:
					return c2sStartTLSRequired, nil
				case starttls:
					return c2sStartTLS, nil
				}
				return c2sPlain, nil
			}
		}
	}
}
