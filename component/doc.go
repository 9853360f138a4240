// Package component is the XMPP side of cusax-gw: an external component
// (XEP-0114) attached to the operator's Prosody or ejabberd that, with the
// privileges of XEP-0356, publishes every user's reachability addresses
// (XEP-0152) and keeps the tel fields of their vCards (XEP-0054, XEP-0292)
// equal to the identity map, as RFC 7081 (CUSAX) section 3 describes.
//
// A Component never needs the XMPP server to start: Run dials, performs the
// XEP-0114 handshake and serves the stream, and when anything fails it
// reconnects forever with capped exponential backoff, reporting its state
// through Up, Privileges and the cusax_xmpp_* metrics. After every handshake
// the server advertises the XEP-0356 grants (urn:xmpp:privilege:1 from
// ejabberd, :2 from Prosody); the component records them per stream. While
// connected it answers XEP-0030 disco#info (identity gateway/sip), XEP-0199
// pings and XEP-0092 version queries, and pings the server itself as a
// keepalive. Probe performs one handshake for `cusax-gw check`.
package component
