package b2bua

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestPBXDownAnswersAtOnce: with the PBX silent, the pings mark it down and
// REGISTERs and calls from phones get 503 with Retry-After at once instead
// of after the 32 s transaction timeout; once it answers again, it is up.
func TestPBXDownAnswersAtOnce(t *testing.T) {
	// A UDP socket that never answers: the silent PBX.
	silent, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	b, _, gw := startCallGateway(t, silent.LocalAddr().String(), CallOptions{PBXPing: 50 * time.Millisecond})
	if err := waitFor(10*time.Second, func() bool { return !b.PBXUp() }); err != nil {
		t.Fatal("the silent PBX was never marked down")
	}
	if got := metric(t, b.m.PBXUp); got != 0 {
		t.Errorf("cusax_sip_pbx_up = %v, want 0", got)
	}
	phone := startPeer(t, "127.0.0.1")
	_, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Errorf("call with the PBX down = %d (Retry-After %v), want 503 with Retry-After", res.StatusCode, res.GetHeader("Retry-After"))
	}
	p := newPhone(t, gw, "alice", "sip:alice@127.0.0.1:5999")
	if res := p.register("60"); res.StatusCode != 503 {
		t.Errorf("REGISTER with the PBX down = %d, want 503", res.StatusCode)
	}
}

func TestPBXUpWhileAnswering(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2") // sipgo answers OPTIONS (405 counts as alive)
	b, _, _ := startCallGateway(t, pbx.addr, CallOptions{PBXPing: 50 * time.Millisecond})
	b.setPBXDown(true, "test")
	if err := waitFor(10*time.Second, b.PBXUp); err != nil {
		t.Fatal("an answering PBX was not marked up again")
	}
	if got := metric(t, b.m.PBXUp); got != 1 {
		t.Errorf("cusax_sip_pbx_up = %v, want 1", got)
	}
}

// TestPBXTimeoutWithoutPingsKeepsUp: with pings off nothing could mark the
// PBX up again, so a timed-out request must not mark it down.
func TestPBXTimeoutWithoutPingsKeepsUp(t *testing.T) {
	b, _, _ := startCallGateway(t, "127.0.0.2:9", CallOptions{})
	b.pbxTimedOut(context.DeadlineExceeded)
	if !b.PBXUp() {
		t.Error("a timeout with pbx_ping off marked the PBX down for good")
	}
}
