package component

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"mellium.im/xmpp/jid"
)

// Defaults that New applies to zero fields of Config.
const (
	DefaultDialTimeout       = 10 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultMinBackoff        = 1 * time.Second
	DefaultMaxBackoff        = 30 * time.Second
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultAdvertTimeout     = 5 * time.Second
	DefaultVersion           = "unknown"
)

// Config configures a Component. Zero durations take the Default… values.
type Config struct {
	// JID is the component's address, a bare domain such as
	// "cusax.example.com"; the server must know it as an external component.
	JID string
	// Server is the host:port of the server's XEP-0114 listener, e.g.
	// "127.0.0.1:5347".
	Server string
	// Secret is the shared XEP-0114 secret. It never appears in logs or errors.
	Secret Secret
	// Domain is the users' domain, e.g. "example.com". Privilege adverts are
	// accepted only from it and keepalive pings are sent to it.
	Domain string
	// Version is the software version answered to XEP-0092 queries
	// [DefaultVersion].
	Version string

	// DialTimeout bounds the TCP connect [DefaultDialTimeout].
	DialTimeout time.Duration
	// HandshakeTimeout bounds the stream header exchange and the handshake
	// [DefaultHandshakeTimeout].
	HandshakeTimeout time.Duration
	// MinBackoff is the nominal wait before the first retry after a failure
	// [DefaultMinBackoff]; it doubles per consecutive failure up to MaxBackoff
	// [DefaultMaxBackoff]. Each actual wait is the nominal one shortened by a
	// random 0–20 % (jitter).
	MinBackoff, MaxBackoff time.Duration
	// KeepaliveInterval is the period of XEP-0199 pings to Domain while
	// connected; a ping unanswered for one interval ends the session
	// [DefaultKeepaliveInterval].
	KeepaliveInterval time.Duration
	// AdvertTimeout is how long Probe waits for the XEP-0356 privilege advert
	// after the handshake, and how long the sync engine waits for it before
	// planning without privileges [DefaultAdvertTimeout].
	AdvertTimeout time.Duration

	// Identities is the identity map whose reachability and vCard numbers
	// the component publishes while connected; nil disables synchronisation.
	Identities Identities `json:"-" yaml:"-"`
	// Sync says what is published and how (see SyncConfig).
	Sync SyncConfig
}

// Secret is the XEP-0114 shared secret. Its String, GoString, LogValue and
// MarshalText methods return "REDACTED" so that it cannot leak through fmt,
// log/slog or encoders; only this package reads the real value.
type Secret string

const redacted = "REDACTED"

// String returns "REDACTED".
func (Secret) String() string { return redacted }

// GoString returns "REDACTED", also for the %#v verb.
func (Secret) GoString() string { return redacted }

// LogValue returns "REDACTED" for log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "REDACTED" for encoding/json, YAML and friends.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// withDefaults returns cfg with every zero field set to its default.
func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.KeepaliveInterval, DefaultKeepaliveInterval)
	def(&cfg.AdvertTimeout, DefaultAdvertTimeout)
	if cfg.Version == "" {
		cfg.Version = DefaultVersion
	}
	cfg.Sync = cfg.Sync.withDefaults()
	return cfg
}

// validate reports every problem of a defaulted cfg at once and returns the
// parsed component JID and users' domain.
func (cfg Config) validate() (addr, domain jid.JID, err error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}

	addr, e := parseDomain(cfg.JID)
	if e != nil {
		bad("JID", "%q: %v", cfg.JID, e)
	}
	domain, e = parseDomain(cfg.Domain)
	if e != nil {
		bad("Domain", "%q: %v", cfg.Domain, e)
	}
	if e == nil && addr.Equal(domain) {
		bad("JID", "%q must differ from Domain", cfg.JID)
	}
	if e := checkHostPort(cfg.Server); e != nil {
		bad("Server", "%q: %v", cfg.Server, e)
	}
	if cfg.Secret == "" {
		bad("Secret", "empty")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"DialTimeout", cfg.DialTimeout},
		{"HandshakeTimeout", cfg.HandshakeTimeout},
		{"MinBackoff", cfg.MinBackoff},
		{"MaxBackoff", cfg.MaxBackoff},
		{"KeepaliveInterval", cfg.KeepaliveInterval},
		{"AdvertTimeout", cfg.AdvertTimeout},
	} {
		if d.v <= 0 {
			bad(d.name, "must be positive, got %s", d.v)
		}
	}
	errs = append(errs, cfg.Sync.validate()...)
	if cfg.MinBackoff > cfg.MaxBackoff {
		bad("MinBackoff", "%s exceeds MaxBackoff %s", cfg.MinBackoff, cfg.MaxBackoff)
	}
	return addr, domain, errors.Join(errs...)
}

// parseDomain parses s as a JID that has only a domainpart.
func parseDomain(s string) (jid.JID, error) {
	if s == "" {
		return jid.JID{}, errors.New("empty")
	}
	j, err := jid.Parse(s)
	if err != nil {
		return jid.JID{}, err
	}
	if j.Localpart() != "" || j.Resourcepart() != "" {
		return jid.JID{}, errors.New("must be a bare domain without localpart or resource")
	}
	return j, nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}
