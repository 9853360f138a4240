package b2bua

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Listener is one SIP listening socket.
type Listener struct {
	Network string // udp|tcp|tls|ws|wss
	Addr    string // host:port
}

func (l Listener) String() string { return l.Network + "://" + l.Addr }

// Config configures a B2BUA. The zero values of the optional fields are
// replaced by defaults in New.
type Config struct {
	Listen    []Listener
	TLS       *tls.Config // required by tls and wss listeners
	Domain    string      // host part of the users' AORs
	PBX       string      // SIP URI of the next hop
	UserAgent string      // User-Agent and Server header value

	// RetryAfter is the Retry-After value (seconds) of every 503 the
	// gateway answers while draining or overloaded. Default 30s.
	RetryAfter time.Duration

	// Advertise is the host written into the gateway contacts registered
	// at the PBX (and the Via of requests to it). Default: the listener's
	// address, or when that is unspecified (0.0.0.0) the local address
	// toward the PBX.
	Advertise string
	// Bindings stores the registrations made through the gateway.
	// Default: a MemoryBindings (one node).
	Bindings Bindings
	// SweepInterval is how often expired bindings are removed (and
	// cusax_registrations_active updated). Default 5s.
	SweepInterval time.Duration
	// PBXTimeout bounds the wait for the PBX's final answer to a forwarded
	// request; the phone then gets 408. Default 32s (Timer F).
	PBXTimeout time.Duration
	// UDPReadBuffer is the receive buffer, in bytes, asked for on each
	// UDP listener (the kernel may grant less: net.core.rmem_max; New's
	// Listen logs a warning then). 0: DefaultUDPReadBuffer; negative: the
	// kernel's default (net.core.rmem_default).
	UDPReadBuffer int
	// Now is the clock used for binding expiry. Default time.Now.
	Now func() time.Time
	// CallOptions configures call bridging (call_config.go).
	CallOptions

	// Auth is who authenticates phones: "passthrough" (default; the PBX
	// challenges, the gateway relays) or "local" (the gateway challenges
	// with SIP digest against Credentials, realm Domain; see auth.go).
	Auth string
	// Credentials holds the per-AOR digest credentials; required when
	// Auth is "local".
	Credentials Credentials
	// NonceKey is the HMAC key of the digest nonces. Default: random per
	// process. Gateways sharing one address may share a key so that a
	// nonce one issued is accepted by another.
	NonceKey []byte
	// NonceLifetime is how long a digest nonce is accepted; an older one
	// gets a new challenge with stale=true. Default 5 minutes.
	NonceLifetime time.Duration
	// DigestAlgorithms are the algorithms challenged (one challenge each,
	// in this order: RFC 8760 clients take the first they support) and
	// accepted: "SHA-256", "MD5". Default SHA-256 then MD5. Put MD5 first
	// for phones that read only the first challenge and know only MD5.
	DigestAlgorithms []string

	// digest is the local-auth state New creates (nonces, replay cache).
	digest *digestAuth
}

func (c *Config) setDefaults() {
	if c.UserAgent == "" {
		c.UserAgent = "cusax-gw"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Bindings == nil {
		c.Bindings = NewMemoryBindings(c.Now)
	}
	if c.PBXTimeout <= 0 {
		c.PBXTimeout = 32 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 5 * time.Second
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = 30 * time.Second
	}
	if c.UDPReadBuffer == 0 {
		c.UDPReadBuffer = DefaultUDPReadBuffer
	}
	c.setAuthDefaults()
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("b2bua: no listener configured"))
	}
	for _, l := range c.Listen {
		switch l.Network {
		case "udp", "tcp", "ws":
		case "tls", "wss":
			if c.TLS == nil {
				errs = append(errs, fmt.Errorf("b2bua: listener %s needs a TLS configuration", l))
			}
		default:
			errs = append(errs, fmt.Errorf("b2bua: listener %s: unknown transport", l))
		}
	}
	errs = append(errs, c.validateAuth()...)
	return errors.Join(errs...)
}
