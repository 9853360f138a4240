// Package identity holds the authoritative map between XMPP addresses (bare
// JIDs, RFC 7622), SIP addresses of record (RFC 3261) and E.164 telephone
// numbers (RFC 3966 tel: URIs), the map that RFC 7081 (CUSAX) section 3
// assumes the provider "knows".
//
// The package imports no other package of cusax-gw.
package identity
