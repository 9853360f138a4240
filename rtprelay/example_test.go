package rtprelay_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// The b2bua drives the relay like rtpengine: the caller's offer goes to
// Offer, the callee's answer to Answer, and a BYE (or OnTimeout) to Delete.
func ExampleRelay() {
	hangUp := func(callID string) { /* send BYE on both legs */ }
	r, err := rtprelay.New(rtprelay.Config{
		Listen:    netip.MustParseAddr("10.0.0.5"),
		Advertise: netip.MustParseAddr("203.0.113.5"),
		PortMin:   30000, PortMax: 39999,
		Timeout:   time.Minute,
		OnTimeout: hangUp,
	}, slog.Default(), rtprelay.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx) // owns the sockets; returns after closing them

	callerSDP := []byte("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
	toCallee, err := r.Offer(ctx, "call-id@host", "from-tag", callerSDP)
	switch {
	case errors.Is(err, rtprelay.ErrBadSDP):
		// answer the INVITE with 488 Not Acceptable Here
	case errors.Is(err, rtprelay.ErrNoPorts):
		// answer 503 with Retry-After
	}
	_ = toCallee // the B-leg INVITE carries this SDP
	// ... the callee answers with calleeSDP:
	// toCaller, err := r.Answer(ctx, "call-id@host", "to-tag", calleeSDP)
	// ... and on BYE:
	_ = r.Delete("call-id@host")
}
