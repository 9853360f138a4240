package b2bua

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
)

// Outbound connections (TCP, TLS, WS, WSS).
//
// Phones are reached over the connections they opened: a binding names
// the connection's far end, and sipgo's connection pool finds it. The
// gateway itself opens connections only toward sip.pbx and the sip.trusted
// prefixes. Without this rule sipgo would dial a phone's address in two
// cases, both useless and one abusable:
//
//   - RFC 3261 section 18.2.2: when the connection a request came on
//     closes before sipgo has set up its server transaction, sipgo opens a
//     new connection to the request's source address on its top Via port
//     (bounded by 10 s) to send the response. A phone's Via port is not a
//     listening port behind NAT, and since the Via is the sender's to
//     write, anyone could make the gateway connect to any address.
//   - A call toward a phone whose connection is gone would dial that
//     connection's ephemeral port (up to the transaction timeout behind a
//     NAT that drops the SYN).
//
// Refused dials fail at once, before any packet is sent: the response is
// dropped (the phone's connection is gone anyway), the call fails with
// 503 until the phone registers again on a new connection.
//
// WSS is not covered: sipgo's WSS transport (v1.7.3) dials with a
// net.Dialer of its own and offers no hook before connect; a WSS dial-back
// keeps sipgo's 10 s bound.

// errDialRefused is the reason of a refused outbound connection.
var errDialRefused = errors.New("b2bua: no outbound connection to an untrusted address (phones are reached over their own connections)")

// dialPolicy decides which addresses the gateway may connect to.
type dialPolicy struct {
	trusted  []netip.Prefix
	pbxHost  string // sip.pbx host: an IP or a DNS name; "" without a PBX
	resolver *net.Resolver
}

// newDialPolicy returns the policy of cfg (cfg.PBX need not parse: New
// reports that).
func newDialPolicy(cfg Config) *dialPolicy {
	p := &dialPolicy{trusted: cfg.Trusted, resolver: net.DefaultResolver}
	if cfg.PBX != "" {
		var u sip.Uri
		if sip.ParseUri(cfg.PBX, &u) == nil {
			p.pbxHost = u.Host
		}
	}
	return p
}

// allow reports whether the gateway may connect to address (ip:port, as
// the dialer has resolved it).
func (p *dialPolicy) allow(ctx context.Context, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errDialRefused, address)
	}
	ip := ap.Addr().Unmap()
	for _, pr := range p.trusted {
		if pr.Contains(ip) {
			return nil
		}
	}
	if p.pbxHost != "" {
		if a, err := netip.ParseAddr(p.pbxHost); err == nil {
			if a.Unmap() == ip {
				return nil
			}
		} else if ips, err := p.resolver.LookupNetIP(ctx, "ip", p.pbxHost); err == nil {
			for _, a := range ips {
				if a.Unmap() == ip {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %s", errDialRefused, address)
}

// control is the net.Dialer ControlContext hook: it runs after the
// address is resolved and before connect.
func (p *dialPolicy) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	return p.allow(ctx, address)
}

// option returns the user agent option that installs the policy in the
// TCP, TLS and WS transports (TLS dials keep the user agent's TLS
// configuration: sipgo applies it to the transport it is given).
func (p *dialPolicy) option() sipgo.UserAgentOption {
	netDialer := func(laddr net.Addr) net.Dialer {
		// sipgo's default, plus the policy.
		return net.Dialer{Timeout: time.Minute, LocalAddr: laddr, ControlContext: p.control}
	}
	wsDialer := func(laddr net.Addr) ws.Dialer {
		d := netDialer(laddr)
		return ws.Dialer{NetDial: d.DialContext, Protocols: sip.WebSocketProtocols}
	}
	return sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerTransports(sip.TransportsConfig{
		TCP: &sip.TransportTCP{DialerCreate: netDialer},
		TLS: &sip.TransportTLS{TransportTCP: &sip.TransportTCP{DialerCreate: netDialer}},
		WS:  &sip.TransportWS{DialerCreate: wsDialer},
	}))
}
