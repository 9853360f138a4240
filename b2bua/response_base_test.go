package b2bua

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestResponseBase: the responses to a leg's initial INVITE made from the
// first one's base are those NewResponseFromRequest makes (with our To
// tag): headers, order, Record-Route only for 101-299, Content-Length,
// transport and destination.
func TestResponseBase(t *testing.T) {
	raw := strings.Join([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Record-Route: <sip:p1.example.com;lr>",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport",
		"Record-Route: <sip:p2.example.com;lr>",
		"Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-0",
		"From: \"Alice\" <sip:alice@example.com>;tag=a",
		"To: <sip:bob@example.com>",
		"Call-ID: c1",
		"CSeq: 7 INVITE",
		"Subject: s",
		"Contact: <sip:alice@192.0.2.1>",
		"Timestamp: 54",
		"Content-Length: 0",
		"", ""}, "\r\n")
	mk := func() (*leg, *sip.Request) {
		req := parseRequest(t, []byte(raw))
		req.SetTransport("UDP")
		req.SetSource("192.0.2.9:6000")
		contact := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.50", Port: 5060}}
		return &leg{name: "a", localTag: "gw1", invite: req, contact: contact}, req
	}
	b := &B2BUA{m: testMetrics()}
	body := []byte("v=0\r\n")
	for _, first := range []int{180, 183, 200} {
		for _, next := range []int{180, 200, 202, 302, 486, 603} {
			l, req := mk()
			b.responseFor(l, req, first, "First", nil, nil)
			if l.resBase == nil {
				t.Fatalf("no response base after %d", first)
			}
			got := b.responseFor(l, req, next, "Next", nil, body)
			fresh, freq := mk()
			want := b.responseFor(fresh, freq, next, "Next", nil, body)
			if got.String() != want.String() {
				t.Errorf("%d after %d:\n%s\nwant\n%s", next, first, got, want)
			}
			if got.Destination() != want.Destination() || got.Transport() != want.Transport() {
				t.Errorf("%d after %d: to %s over %s, want %s over %s", next, first,
					got.Destination(), got.Transport(), want.Destination(), want.Transport())
			}
			if !strings.Contains(got.String(), "received=192.0.2.9") || !strings.Contains(got.String(), ";tag=gw1") {
				t.Errorf("%d after %d: no received or To tag:\n%s", next, first, got)
			}
		}
	}
	// No base from a final response, nor for another request of the leg.
	l, req := mk()
	b.responseFor(l, req, 486, "Busy", nil, nil)
	if l.resBase != nil {
		t.Error("response base after a 486")
	}
	other := parseRequest(t, []byte(raw))
	b.responseFor(l, other, 180, "Ringing", nil, nil)
	if l.resBase != nil {
		t.Error("response base from another request")
	}
}
