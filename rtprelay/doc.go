// Package rtprelay anchors and relays the media of bridged calls: it
// rewrites SDP (RFC 4566, RFC 3264) to its own ports, latches to the real
// source of each stream (symmetric RTP, RFC 4961), and forwards RTP and
// RTCP (RFC 3550; RTCP multiplexed per RFC 5761 passes as it comes) without
// touching payloads, so SRTP (RFC 4568) and DTLS-SRTP pass through. It
// counts packets, bytes, loss and interarrival jitter per leg and reports
// calls whose media stopped.
//
// The API follows rtpengine's ng control protocol (offer, answer, delete,
// query) so that the b2bua can drive either. It knows nothing about SIP or
// XMPP and imports no other package of cusax-gw. See docs/rtprelay.md.
package rtprelay
