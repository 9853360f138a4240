// Package rtprelay anchors and relays the media of bridged calls: it
// rewrites SDP (RFC 4566, RFC 3264) to its own ports, latches to the real
// source of each stream, and forwards RTP and RTCP (RFC 3550). It knows
// nothing about SIP or XMPP and imports no other package of cusax-gw.
package rtprelay
