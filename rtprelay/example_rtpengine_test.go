package rtprelay_test

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// The b2bua drives rtpengine through the same Media interface as the
// in-process relay (rtp.backend: rtpengine).
func ExampleRtpengine() {
	ng, err := rtprelay.NewNGClient("127.0.0.1:22222", rtprelay.NGOptions{})
	if err != nil {
		panic(err)
	}
	defer ng.Close()
	ctx := context.Background()
	if err := ng.Ping(ctx); err != nil {
		return // rtpengine is not running: cusax-gw check reports it
	}
	var media rtprelay.Media = rtprelay.NewRtpengine(ng, slog.Default(), rtprelay.NewMetrics(prometheus.NewRegistry()))

	offer := []byte("v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n")
	toCallee, err := media.Offer(ctx, "call-id@pbx", "alice-tag", offer) // INVITE from Alice
	if err != nil {
		return // ErrBadSDP → 488, ErrNoPorts or ErrNGTimeout → 503
	}
	_ = toCallee                                                              // the INVITE to Bob carries it
	toCaller, _ := media.Answer(ctx, "call-id@pbx", "bob-tag", []byte("...")) // 200 OK from Bob
	_ = toCaller
	_ = media.Delete("call-id@pbx") // BYE
}
