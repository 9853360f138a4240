package b2bua

import (
	"errors"
	"net/netip"
	"time"

	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// Resolver maps a caller's URI to the identity that owns it, for the
// Call-Info impp stamp. It must answer from memory (the b2bua calls it on
// every INVITE): identity.Directory's cache behind a small adapter.
type Resolver interface {
	// Resolve returns the bare JID and display name of the identity that
	// owns uri (a sip:, sips: or tel: URI, or a SIP URI whose user part is
	// a number), or ok false.
	Resolve(uri string) (jid, name string, ok bool)
}

// CallOptions configures call bridging. Zero values mean the defaults
// given on each field.
type CallOptions struct {
	// Media anchors the media of every call (the in-process relay or
	// rtpengine). Nil: calls are bridged without media anchoring (SDP
	// passes untouched); only for tests and signalling-only setups.
	Media rtprelay.Media
	// Resolver resolves callers to JIDs. Nil: nothing resolves (claims
	// from untrusted sources are still stripped).
	Resolver Resolver
	// Trusted are the peers whose identity headers (P-Asserted-Identity,
	// Call-Info impp) are believed: the PBX. A request from a trusted
	// source is a call toward a phone; any other is a call from a phone.
	Trusted []netip.Prefix
	// CallInfo is "stamp" (default) or "off".
	CallInfo string
	// XMPPContact also adds the stamped JID as a second Contact value
	// <xmpp:JID> after the SIP one (the draft's literal form).
	XMPPContact bool

	// MaxCalls limits concurrent calls (0: unlimited).
	MaxCalls int
	// MaxCPS limits new calls per second over all sources (0: unlimited).
	MaxCPS int
	// RateLimit limits requests per second per untrusted source address
	// (0: unlimited); bursts of two seconds' worth pass.
	RateLimit int
	// MaxDuration ends a call with BYE on both legs (0: never). Default 0.
	MaxDuration time.Duration
	// RingTimeout bounds the wait for a final answer once the B-leg
	// INVITE is out (then CANCEL and 408). Default 3 minutes.
	RingTimeout time.Duration
	// PBXPing is the interval of the OPTIONS pings to the PBX (0: no
	// pings; the daemon's sip.pbx_ping defaults to 5 s). Two unanswered pings, or one request that
	// timed out, mark the PBX down until a ping is answered; meanwhile
	// REGISTERs and calls from phones get 503 with Retry-After at once.
	PBXPing time.Duration
	// ByeTimeout bounds the wait for the answer to a BYE or CANCEL the
	// gateway sends. Default 32 s (Timer F).
	ByeTimeout time.Duration
}

func (o *CallOptions) setDefaults() {
	if o.CallInfo == "" {
		o.CallInfo = "stamp"
	}
	if o.RingTimeout <= 0 {
		o.RingTimeout = 3 * time.Minute
	}
	if o.ByeTimeout <= 0 {
		o.ByeTimeout = 32 * time.Second
	}
}

func (o *CallOptions) validate() error {
	var errs []error
	if o.CallInfo != "stamp" && o.CallInfo != "off" {
		errs = append(errs, errors.New(`b2bua: CallInfo must be "stamp" or "off"`))
	}
	if o.MaxCalls < 0 || o.MaxCPS < 0 || o.RateLimit < 0 || o.MaxDuration < 0 {
		errs = append(errs, errors.New("b2bua: negative call limit"))
	}
	return errors.Join(errs...)
}

// trusted reports whether a request source (host:port) is a trusted peer.
func (o *CallOptions) trusted(source string) bool {
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range o.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
