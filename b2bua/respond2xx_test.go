package b2bua

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emiago/sipgo/sip"
)

// respond2xx, with its one timer: over UDP the 2xx goes out at once and
// again at T1, 3*T1, 7*T1, then every T2 until the ACK comes or 64*T1
// have passed; over TCP once.
func TestRespond2xxRetransmissions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		transport string
		ackAfter  time.Duration // 0: never
		responses int
		returns   time.Duration // when respond2xx returns
	}{
		// Sent at 0, 0.5, 1.5, 3.5, 7.5, 11.5, ..., 31.5 s; gives up at 32 s.
		{"udp no ack", "UDP", 0, 11, 64 * sip.T1},
		{"udp ack after 2 s", "UDP", 2 * time.Second, 3, 2 * time.Second},
		{"tcp no ack", "TCP", 0, 1, 64 * sip.T1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				req := testInvite(t, tc.transport)
				b := &B2BUA{m: testMetrics()}
				c := &call{logger: discardLogger(), done: make(chan struct{})}
				l := &leg{name: "a", call: c, localTag: "t", ackCh: make(chan *sip.Request, 4)}
				tx := &recordTx{}
				if tc.ackAfter > 0 {
					ack := testAck(t, req)
					time.AfterFunc(tc.ackAfter, func() { l.ackCh <- ack })
				}
				start := time.Now()
				got := b.respond2xx(c, l, tx, req, sip.NewResponseFromRequest(req, 200, "OK", nil), nil)
				if took := time.Since(start); took != tc.returns {
					t.Errorf("returned after %v, want %v", took, tc.returns)
				}
				if (got != nil) != (tc.ackAfter > 0) {
					t.Errorf("returned ACK %v, want one: %v", got, tc.ackAfter > 0)
				}
				if n := len(tx.res); n != tc.responses {
					t.Errorf("%d responses sent, want %d", n, tc.responses)
				}
			})
		})
	}
}

// Once the INVITE transaction is gone (sip.accepted_linger), respond2xx
// goes on retransmitting the 2xx straight to the transport.
func TestRespond2xxAfterTransaction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		req := testInvite(t, "UDP")
		var direct []*sip.Response
		b := &B2BUA{m: testMetrics(), writeResponse: func(res *sip.Response) error {
			direct = append(direct, res)
			return nil
		}}
		c := &call{logger: discardLogger(), done: make(chan struct{})}
		l := &leg{name: "a", call: c, localTag: "t", ackCh: make(chan *sip.Request, 4)}
		tx := &endingTx{okFor: 2} // the 2xx and its first retransmission
		ack := testAck(t, req)
		time.AfterFunc(4*time.Second, func() { l.ackCh <- ack }) // after 0, 0.5, 1.5, 3.5 s
		if got := b.respond2xx(c, l, tx, req, sip.NewResponseFromRequest(req, 200, "OK", nil), nil); got == nil {
			t.Fatal("no ACK returned")
		}
		if len(tx.res) != 2 || len(direct) != 2 {
			t.Fatalf("2xx through the transaction %d times, straight %d times; want 2 and 2", len(tx.res), len(direct))
		}
		if direct[0] != tx.res[0] || direct[1].StatusCode != 200 {
			t.Errorf("the straight retransmissions are not the 2xx")
		}
	})
}

// testInvite is an initial INVITE from 192.0.2.1 over transport.
func testInvite(t *testing.T, transport string) *sip.Request {
	t.Helper()
	req := parseRequest(t, []byte(strings.Join([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/" + transport + " 192.0.2.1:5060;branch=z9hG4bK-1",
		"From: <sip:alice@example.com>;tag=a",
		"To: <sip:bob@example.com>",
		"Call-ID: c1",
		"CSeq: 1 INVITE",
		"Contact: <sip:alice@192.0.2.1>",
		"Content-Length: 0",
		"", ""}, "\r\n")))
	req.SetTransport(transport)
	return req
}

// testAck is the ACK of req's 2xx.
func testAck(t *testing.T, req *sip.Request) *sip.Request {
	t.Helper()
	return parseRequest(t, []byte(strings.Replace(strings.Replace(req.String(), "INVITE sip", "ACK sip", 1), "1 INVITE", "1 ACK", 1)))
}

// endingTx accepts okFor responses, then answers as a terminated
// transaction.
type endingTx struct {
	recordTx
	okFor int
}

func (tx *endingTx) Respond(res *sip.Response) error {
	if len(tx.res) >= tx.okFor {
		return sip.ErrTransactionTerminated
	}
	return tx.recordTx.Respond(res)
}

// bLegCallID is "cx" and the first 16 bytes of HMAC-SHA256(callKey,
// A-leg Call-ID) in hex, the same with its pooled MACs on every call.
func TestBLegCallID(t *testing.T) {
	b, err := New(Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}}, discardLogger(), testMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer b.ua.Close()
	for _, a := range []string{"a1", "a2", "a1", strings.Repeat("x", 200)} {
		m := hmac.New(sha256.New, b.callKey[:])
		m.Write([]byte(a))
		want := "cx" + hex.EncodeToString(m.Sum(nil)[:16])
		if got := b.bLegCallID(a); got != want {
			t.Errorf("bLegCallID(%q) = %q, want %q", a, got, want)
		}
	}
}
