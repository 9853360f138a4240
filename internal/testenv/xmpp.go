package testenv

import (
	"context"
	"fmt"
	"net"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
)

// DialClient logs in to the rig's plain-text c2s listener at addr as user
// (a bare or full JID) with SASL PLAIN and binds a resource. The rig's
// servers do not offer TLS on loopback, so the stream is marked secure up
// front: never use this against a server on another host. The caller
// closes the session (and owns any Serve loop).
func DialClient(ctx context.Context, addr string, user jid.JID, password string) (*xmpp.Session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("testenv: dial c2s %s: %w", addr, err)
	}
	s, err := xmpp.NewSession(ctx, user.Domain(), user, conn, xmpp.Secure, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
			xmpp.SASL("", password, sasl.Plain),
			xmpp.BindResource(),
		}}
	}))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("testenv: c2s login %s at %s: %w", user, addr, err)
	}
	return s, nil
}

// DialComponent opens an XEP-0114 component stream to addr as domain and
// completes the handshake with secret. The caller closes the session.
func DialComponent(ctx context.Context, addr string, domain jid.JID, secret string) (*xmpp.Session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("testenv: dial component %s: %w", addr, err)
	}
	s, err := component.NewSession(ctx, domain, []byte(secret), conn)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("testenv: component handshake %s at %s: %w", domain, addr, err)
	}
	return s, nil
}
