// Package b2bua is the SIP side of cusax-gw: a back-to-back user agent
// (RFC 3261 section 6, RFC 7092) in front of the PBX that passes
// registrations through, bridges every call as two dialogs with SDP
// offer/answer (RFC 3264) anchored by the RTP relay, and stamps the
// caller's XMPP address as Call-Info with purpose=impp (RFC 6993), as
// RFC 7081 (CUSAX) section 3 asks.
package b2bua
