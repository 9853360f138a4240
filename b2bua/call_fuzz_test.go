package b2bua

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzCallHeaders feeds arbitrary INVITEs to what the call code reads
// from a request: caller URIs (P-Asserted-Identity, From), route sets,
// Supported filtering, the SDP body test and the B-leg identity rules. It
// must never panic, and the rewritten request must carry no impp claim
// but the one stamped.
func FuzzCallHeaders(f *testing.F) {
	f.Add("INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n" +
		"From: \"A\" <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n" +
		"P-Asserted-Identity: <tel:+15551230001>, \"x\" <sip:carol@example.com>\r\n" +
		"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nSupported: 100rel, timer, replaces\r\n" +
		"Call-Info: <xmpp:mallory@example.com>;purpose=impp\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n")
	f.Add("INVITE sip:b SIP/2.0\r\nP-Asserted-Identity: <\r\nRecord-Route: \"<,>\"\r\nContent-Length: 0\r\n\r\n")
	resolver := mapResolver{"sip:alice@example.com": {"alice@example.com", "Alice"}}
	f.Fuzz(func(t *testing.T, raw string) {
		msg, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		for _, trusted := range []bool{false, true} {
			for _, u := range callerURIs(req, trusted, "") {
				resolver.Resolve(u)
			}
		}
		routeSet(req.GetHeaders("Record-Route"))
		filterSupported(req.GetHeaders("Supported"))
		sdpBody(req)

		b := &B2BUA{cfg: Config{CallOptions: CallOptions{Resolver: resolver, CallInfo: "stamp"}}, m: testMetrics()}
		c := &call{logger: discardLogger()}
		breq := sip.NewRequest(sip.INVITE, req.Recipient)
		copyHeaders(req, breq, "Call-Info")
		bfrom := &sip.FromHeader{Params: sip.NewParams()}
		b.identify(c, req, breq, false, "", bfrom)
		var impp []string
		for _, h := range breq.GetHeaders("Call-Info") {
			for _, v := range splitCallInfo(h.Value()) {
				if parseCallInfo(v).impp {
					impp = append(impp, v)
				}
			}
		}
		if len(impp) > 1 || (len(impp) == 1 && impp[0] != "<xmpp:alice@example.com>;purpose=impp") {
			t.Fatalf("untrusted INVITE left impp values %q", impp)
		}
	})
}

func testMetrics() *Metrics { return NewMetrics(prometheus.NewRegistry()) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
