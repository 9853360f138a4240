// Package component is the XMPP side of cusax-gw: an external component
// (XEP-0114) attached to the operator's Prosody or ejabberd that, with the
// privileges of XEP-0356, publishes every user's reachability addresses
// (XEP-0152) and keeps the tel fields of their vCards (XEP-0054, XEP-0292)
// equal to the identity map, as RFC 7081 (CUSAX) section 3 describes.
package component
