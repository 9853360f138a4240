package b2bua

import (
	"context"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// A copy of a call's initial INVITE that no transaction absorbs (its server
// transaction ended: sip.transaction_linger) must not become a second call.
func TestLateInitialInviteCopy482(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
	phone := startPeer(t, "127.0.0.1")
	s := phone.answeredCall(t, gw)

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

	// Ended, the call's initial INVITE is still known: another copy on a
	// new branch is still a merged request.
	dup2 := dup.Clone()
	dup2.RemoveHeader("Via") // the client gives it a new branch
	got, err = phone.client.Do(ctx, dup2)
	if err != nil {
		t.Fatalf("INVITE copy after the call: %v", err)
	}
	if got.StatusCode != 482 {
		t.Errorf("INVITE copy after the call = %d, want 482", got.StatusCode)
	}

	// A copy on the original branch is a retransmission: absorbed, no
	// response and no call. (Another sent-by port, so that no transaction
	// of sipgo's can match it whatever sip.accepted_linger is: the
	// gateway's own check, by branch, must.)
	re := s.InviteRequest.Clone()
	via := re.Via()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	via.Host, via.Port = "127.0.0.1", conn.LocalAddr().(*net.UDPAddr).Port
	gwAddr, err := net.ResolveUDPAddr("udp", gw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP([]byte(re.String()), gwAddr); err != nil {
		t.Fatal(err)
	}
	for metric(t, b.m.Absorbed) != 1 {
		if ctx.Err() != nil {
			t.Fatalf("absorbed = %v, want 1", metric(t, b.m.Absorbed))
		}
		runtime.Gosched()
	}
	if n := pbx.inviteCount(); n != 1 {
		t.Errorf("PBX saw %d INVITEs, want 1", n)
	}
	if got := metric(t, b.m.CallsActive); got != 0 {
		t.Errorf("calls_active = %v after the absorbed copy, want 0", got)
	}
}

// recentInvites keeps an ended call's initial INVITE at least keep and
// less than twice keep.
func TestRecentInvites(t *testing.T) {
	const keep = 5 * time.Second
	t0 := time.Unix(1000, 0)
	k := func(i int) initialKey { return initialKey{callID: "c" + strconv.Itoa(i), fromTag: "f", seq: 1} }
	var r recentInvites
	r.keep = keep
	if _, ok := r.get(k(0), t0); ok {
		t.Fatal("empty set knows a key")
	}
	r.add(k(1), "b1", t0)
	r.add(k(2), "b2", t0.Add(4*time.Second))
	for _, tc := range []struct {
		key    int
		at     time.Duration
		branch string // "": unknown
	}{
		{1, 0, "b1"}, {1, 4999 * time.Millisecond, "b1"}, {2, 8 * time.Second, "b2"},
		{1, 9999 * time.Millisecond, "b1"}, {1, 10 * time.Second, ""}, {2, 10 * time.Second, ""},
		{3, time.Second, ""},
	} {
		got, ok := r.get(k(tc.key), t0.Add(tc.at))
		if got != tc.branch || ok != (tc.branch != "") {
			t.Errorf("get(c%d) at +%v = %q %v, want %q", tc.key, tc.at, got, ok, tc.branch)
		}
	}
	// A new generation at +6 s: k(1), k(2) move to the older one.
	r.add(k(3), "b3", t0.Add(6*time.Second))
	for _, tc := range []struct {
		key    int
		at     time.Duration
		branch string
	}{
		{2, 9 * time.Second, "b2"}, {3, 9 * time.Second, "b3"}, {1, 10 * time.Second, "b1"},
		{1, 11 * time.Second, ""}, {2, 11 * time.Second, ""}, {3, 15999 * time.Millisecond, "b3"}, {3, 16 * time.Second, ""},
	} {
		got, ok := r.get(k(tc.key), t0.Add(tc.at))
		if got != tc.branch || ok != (tc.branch != "") {
			t.Errorf("after rotation: get(c%d) at +%v = %q %v, want %q", tc.key, tc.at, got, ok, tc.branch)
		}
	}
	// Much later, an add drops both old generations.
	r.add(k(4), "b4", t0.Add(30*time.Second))
	if _, ok := r.get(k(3), t0.Add(30*time.Second)); ok || len(r.prev) != 0 {
		t.Errorf("an add after 2*keep kept older calls (prev %d)", len(r.prev))
	}
}

func (p *sipPeer) inviteCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.invites)
}

// A 2xx the PBX sends again (its ACK lost) is ACKed again with the ACK the
// call sent, whether the B-leg's INVITE transaction still exists or not
// (sip.accepted_linger).
func TestPBX2xxRetransmissionACKedAgain(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	answered := make(chan *sip.Response, 1)
	pbx.mu.Lock()
	pbx.onInvite = func(req *sip.Request, s *sipgo.DialogServerSession) {
		s.Respond(180, "Ringing", nil)
		s.RespondSDP([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", "127.0.0.2")))
		answered <- s.InviteResponse
	}
	pbx.mu.Unlock()
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
	s := startPeer(t, "127.0.0.1").answeredCall(t, gw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	acks := func(n int) []*sip.Request {
		t.Helper()
		for {
			pbx.mu.Lock()
			got := slices.Clone(pbx.acks)
			pbx.mu.Unlock()
			if len(got) >= n {
				return got
			}
			if ctx.Err() != nil {
				t.Fatalf("PBX got %d ACKs, want %d", len(got), n)
			}
			runtime.Gosched()
		}
	}
	first := acks(1)[0]
	ok := <-answered
	if err := pbx.srv.WriteResponse(ok); err != nil {
		t.Fatal(err)
	}
	again := acks(2)[1]
	if again.CSeq().SeqNo != first.CSeq().SeqNo || again.CallID().Value() != first.CallID().Value() {
		t.Errorf("second ACK %s %s, want the first's %s %s", again.CallID().Value(), again.CSeq(), first.CallID().Value(), first.CSeq())
	}
	if err := s.Bye(context.Background()); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	waitCallsEnded(t, b)
}

// answeredCall calls bob through the gateway at gw, expects 200 and ACKs it.
func (p *sipPeer) answeredCall(t *testing.T, gw string) *sipgo.DialogClientSession {
	t.Helper()
	s, res := p.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 200 {
		t.Fatalf("phone got %d, want 200", res.StatusCode)
	}
	if err := s.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
