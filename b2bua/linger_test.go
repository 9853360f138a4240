package b2bua

import (
	"context"
	"testing"
	"time"
)

// A copy of a call's initial INVITE that no transaction absorbs (its server
// transaction ended: sip.transaction_linger) must not become a second call.
func TestLateInitialInviteCopy482(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
	phone := startPeer(t, "127.0.0.1")

	s, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 200 {
		t.Fatalf("phone got %d, want 200", res.StatusCode)
	}
	if err := s.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The same INVITE (Call-ID, From tag, CSeq, no To tag) on a new branch:
	// what the gateway sees of a retransmission after its transaction ended.
	dup := s.InviteRequest.Clone()
	dup.RemoveHeader("Via")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := phone.client.Do(ctx, dup)
	if err != nil {
		t.Fatalf("late INVITE copy: %v", err)
	}
	if got.StatusCode != 482 {
		t.Errorf("late INVITE copy = %d, want 482", got.StatusCode)
	}
	if n := pbx.inviteCount(); n != 1 {
		t.Errorf("PBX saw %d INVITEs, want 1 (the copy must not reach it)", n)
	}
	if got := metric(t, b.m.CallsActive); got != 1 {
		t.Errorf("calls_active = %v, want the one call", got)
	}

	// The call itself is untouched; once it has ended, its initial INVITE
	// is forgotten.
	if err := s.Bye(context.Background()); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	waitCallsEnded(t, b)
	b.callsMu.Lock()
	left := len(b.initial)
	b.callsMu.Unlock()
	if left != 0 {
		t.Errorf("%d initial INVITEs remembered after the call ended, want 0", left)
	}
}

func (p *sipPeer) inviteCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.invites)
}
