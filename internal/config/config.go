// Package config loads, overlays and validates the cusax-gw configuration
// file (YAML). Loading is strict: unknown and duplicate keys are errors that
// carry their line number, and Validate reports every problem at once, each
// naming its YAML path and the bad value.
//
// The keys and their meaning are part of the operator contract (CONTRACT.md);
// config.example.yaml at the repository root documents every one of them.
package config

import (
	"log/slog"
	"time"
)

// Config is the whole configuration of one cusax-gw process. The zero value
// is not useful: start from Default.
type Config struct {
	Log      Log      `yaml:"log"`
	Admin    Admin    `yaml:"admin"`
	Identity Identity `yaml:"identity"`
	XMPP     XMPP     `yaml:"xmpp"`
	SIP      SIP      `yaml:"sip"`
	RTP      RTP      `yaml:"rtp"`
	Shutdown Shutdown `yaml:"shutdown"`
	Runtime  Runtime  `yaml:"runtime"`

	// lines maps a dotted YAML path ("rtp.port_min") to the line it was
	// set on, so that validation errors can point into the file.
	lines map[string]int
	file  string
}

// Log configures the process logger.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error
	Format string `yaml:"format"` // json|text
	// Buffer batches log lines into few writes (internal/logwriter): a
	// line waits at most 100 ms (64 KiB fill it at once); warn and error
	// lines, and everything before them, are written at once. false: one
	// write per line from the logging goroutine.
	Buffer bool `yaml:"buffer"`
}

// Admin configures the admin HTTP server (/metrics, /healthz, /readyz, /api).
type Admin struct {
	Listen    string `yaml:"listen"`
	Token     Secret `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	Pprof     bool   `yaml:"pprof"` // serve /debug/pprof/ (behind the token)
}

// Identity configures the identity store.
type Identity struct {
	Backend       string `yaml:"backend"` // embedded|redis
	Path          string `yaml:"path"`
	Redis         Redis  `yaml:"redis"`
	DefaultRegion string `yaml:"default_region"`
}

// Redis configures the Redis connection shared by all instances.
type Redis struct {
	URL       Secret `yaml:"url"` // may carry a password
	KeyPrefix string `yaml:"key_prefix"`
}

// XMPP configures the XEP-0114 component.
type XMPP struct {
	Component   string `yaml:"component"`
	Server      string `yaml:"server"`
	Secret      Secret `yaml:"secret"`
	SecretFile  string `yaml:"secret_file"`
	Domain      string `yaml:"domain"`
	EjabberdAPI string `yaml:"ejabberd_api"`
	// C2S is the server's client-to-server address (host:port) that
	// `cusax-gw check` probes for TLS, to compare with the SIP listeners
	// (RFC 7081 section 5, downgrade); "" means the host of Server, port
	// 5222; "off" skips the comparison. The daemon never connects there.
	C2S  string `yaml:"c2s"`
	Sync Sync   `yaml:"sync"`
	// Lease decides which instances connect the component when several
	// share one Redis: auto|redis|off (docs/scaling.md).
	Lease string `yaml:"lease"`
}

// Sync configures what the component writes on the users' behalf.
type Sync struct {
	Reach    bool     `yaml:"reach"`
	VCard    string   `yaml:"vcard"` // enforce|fill|off
	Interval Duration `yaml:"interval"`
}

// SIP configures the B2BUA.
type SIP struct {
	Listen    []string `yaml:"listen"`
	Advertise string   `yaml:"advertise"`
	TLS       TLS      `yaml:"tls"`
	Domain    string   `yaml:"domain"`
	PBX       string   `yaml:"pbx"`
	Trusted   []string `yaml:"trusted"`
	Auth      string   `yaml:"auth"` // passthrough|local
	// AuthAlgorithms are the digest algorithms sip.auth local challenges
	// with, in order (SHA-256, MD5).
	AuthAlgorithms []string `yaml:"auth_algorithms"`
	CallInfo       string   `yaml:"call_info"` // stamp|off
	XMPPContact    bool     `yaml:"xmpp_contact"`
	// Admission and call limits; 0 means unlimited.
	MaxCalls    int      `yaml:"max_calls"`    // concurrent calls
	MaxCPS      int      `yaml:"max_cps"`      // new calls per second
	RateLimit   int      `yaml:"rate_limit"`   // requests per second per untrusted source address
	MaxDuration Duration `yaml:"max_duration"` // longest call, then BYE on both legs
	RingTimeout Duration `yaml:"ring_timeout"` // longest wait for an answer after ringing starts
	PBXPing     Duration `yaml:"pbx_ping"`     // OPTIONS ping interval toward sip.pbx; 0: off
	// UDPReceiveBuffer is the receive buffer (bytes) asked for on each UDP
	// listener; 0: the kernel's default (net.core.rmem_default).
	UDPReceiveBuffer int `yaml:"udp_receive_buffer"`
	// TransactionLinger is how long a finished transaction absorbs
	// retransmissions (RFC 3261's 32 s Timers D, J, L, M; Kamailio's
	// wt_timer, 5 s): memory held per finished call.
	TransactionLinger Duration `yaml:"transaction_linger"`
	// AcceptedLinger is how long an INVITE transaction answered 2xx is
	// kept (RFC 6026's Timers L and M, 32 s there): the B2BUA does their
	// work itself for transaction_linger after the call.
	AcceptedLinger Duration `yaml:"accepted_linger"`
}

// TLS names the certificate and key of the tls:// and wss:// SIP listeners.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// RTP configures the media relay.
type RTP struct {
	Listen      string   `yaml:"listen"`
	Advertise   string   `yaml:"advertise"`
	PortMin     int      `yaml:"port_min"`
	PortMax     int      `yaml:"port_max"`
	Timeout     Duration `yaml:"timeout"`
	HoldTimeout Duration `yaml:"hold_timeout"`
	Quarantine  Duration `yaml:"quarantine"` // a freed port pair stays unused this long
	// QuarantineSilent: a freed pair kept bound that fell silent is reused
	// after this (epoll engine; <= quarantine).
	QuarantineSilent Duration  `yaml:"quarantine_silent"`
	Engine           string    `yaml:"engine"` // goroutine|epoll
	Workers          int       `yaml:"workers"`
	Backend          string    `yaml:"backend"` // embedded|rtpengine
	Rtpengine        Rtpengine `yaml:"rtpengine"`
}

// Rtpengine configures the ng control protocol client.
type Rtpengine struct {
	NG string `yaml:"ng"`
}

// Shutdown configures the graceful drain.
type Shutdown struct {
	Drain Duration `yaml:"drain"`
}

// Runtime tunes the Go runtime's garbage collector. The GOGC and GOMEMLIMIT
// environment variables, when set, win over these keys.
type Runtime struct {
	// GCPercent is GOGC: the heap may grow this many percent over the live
	// heap before a collection; -1 collects only at MemoryLimit.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit is GOMEMLIMIT in bytes, a soft limit near which the
	// collector works harder whatever GCPercent says; 0: none.
	MemoryLimit int `yaml:"memory_limit"`
}

// Default returns the configuration every file is overlaid on: the defaults
// of CONTRACT.md.
func Default() *Config {
	return &Config{
		Log:   Log{Level: "info", Format: "json", Buffer: true},
		Admin: Admin{Listen: "127.0.0.1:9464"},
		Identity: Identity{
			Backend: "embedded",
			Path:    "data/identity.db",
			Redis:   Redis{URL: "redis://127.0.0.1:6379/0", KeyPrefix: "cusax:"},
		},
		XMPP: XMPP{
			Component: "cusax.example.com",
			Server:    "127.0.0.1:5347",
			Domain:    "example.com",
			Sync:      Sync{Reach: true, VCard: "enforce", Interval: Duration(10 * time.Minute)},
			Lease:     "auto",
		},
		SIP: SIP{
			Listen:         []string{"udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"},
			Domain:         "example.com",
			PBX:            "sip:127.0.0.1:5070",
			Trusted:        []string{"127.0.0.1/32"},
			Auth:           "passthrough",
			AuthAlgorithms: []string{"SHA-256", "MD5"},
			CallInfo:       "stamp",
			MaxDuration:    Duration(12 * time.Hour),
			RingTimeout:    Duration(3 * time.Minute),
			PBXPing:        Duration(5 * time.Second),
			// 4 MiB: ~2,000 datagrams, a quarter of a second at 2,000 calls/s.
			UDPReceiveBuffer:  4 << 20,
			TransactionLinger: Duration(2 * time.Second),
			AcceptedLinger:    Duration(time.Second),
		},
		RTP: RTP{
			Listen:           "0.0.0.0",
			PortMin:          20000,
			PortMax:          29999,
			Timeout:          Duration(60 * time.Second),
			Quarantine:       Duration(5 * time.Second),
			QuarantineSilent: Duration(time.Second),
			Engine:           "epoll",
			Backend:          "embedded",
			Rtpengine:        Rtpengine{NG: "127.0.0.1:22222"},
		},
		Shutdown: Shutdown{Drain: Duration(30 * time.Second)},
		// 200: half the collector's CPU of Go's 100 for ~1.5x the heap
		// (docs/benchmarks.md, calls per second).
		Runtime: Runtime{GCPercent: 300},
	}
}

// File returns the name of the file the configuration was loaded from.
func (c *Config) File() string { return c.file }

// Line returns the line of the configuration file that set the dotted YAML
// path, or 0 when the value came from a default or the environment.
func (c *Config) Line(path string) int { return c.lines[path] }

// SlogLevel returns the configured log level. Validate guarantees it parses.
func (c *Config) SlogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Secret is a string that never prints: it implements fmt.Stringer and
// slog.LogValuer so that a secret handed to a logger or formatter shows as
// REDACTED. Use Reveal to get the value.
type Secret string

// String returns REDACTED, or the empty string for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString returns REDACTED, so that %#v does not print the secret either.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// Duration is a time.Duration written in YAML as a Go duration string
// ("30s", "10m").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }
