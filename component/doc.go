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
//
// With Config.Identities set, every stream also runs the sync engine: once
// the advert is in, PlanWrites chooses per stream how reachability and
// vCards are written (XEP-0356 v2 privileged IQs, or ejabberd's loopback
// HTTP API send_stanza, or nothing), and the engine reconciles the whole map,
// follows the identity change feed, re-checks users whose available
// presence arrives, and reconciles again every SyncConfig.Interval, with at
// most SyncConfig.Concurrency users in flight. What it writes: the XEP-0152
// node urn:xmpp:reach:0 (item current: SIP AORs, then tel: URIs) and the tel
// fields of the user's vCard (the XEP-0292 vCard4 PEP node urn:xmpp:vcard4
// on Prosody, XEP-0054 vcard-temp elsewhere), read-modify-write, keeping
// every field it does not manage, and never writing an unchanged document.
// Results are counted in cusax_sync_total{kind,result}. Nothing in the sync
// engine can end the stream.
package component
