package b2bua

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Unit tests of call bridging with sipgo peers on loopback: the phone on
// 127.0.0.1, the PBX on 127.0.0.2 (the only trusted address). The SIPp
// scenario suite (calls_integration_test.go) runs the same paths against
// real SIP stacks.

const testSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"

// fakeMedia records the relay calls and marks the SDP it "anchors".
type fakeMedia struct {
	mu      sync.Mutex
	ops     []string
	deleted []string
	err     error // returned by Offer when set
}

func (m *fakeMedia) Offer(_ context.Context, id, tag string, sdp []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	m.ops = append(m.ops, "offer:"+tag)
	return bytes.ReplaceAll(sdp, []byte("IN IP4 127.0.0.1"), []byte("IN IP4 192.0.2.1")), nil
}

func (m *fakeMedia) Answer(_ context.Context, id, tag string, sdp []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops = append(m.ops, "answer:"+tag)
	return bytes.ReplaceAll(sdp, []byte("IN IP4 127.0.0.2"), []byte("IN IP4 192.0.2.1")), nil
}

func (m *fakeMedia) Delete(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deleted = append(m.deleted, id)
	return nil
}

func (m *fakeMedia) Query(string) (rtprelay.Stats, error) { return rtprelay.Stats{}, nil }

func (m *fakeMedia) state() ([]string, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.ops...), append([]string(nil), m.deleted...)
}

// mapResolver resolves from a fixed map.
type mapResolver map[string][2]string

func (r mapResolver) Resolve(uri string) (string, string, bool) {
	var u sip.Uri
	if sip.ParseUri(uri, &u) == nil {
		uri = aorOf(u)
	}
	v, ok := r[uri]
	return v[0], v[1], ok
}

// sipPeer is a sipgo UA listening on one UDP address: the phone or the PBX.
type sipPeer struct {
	t       *testing.T
	addr    string
	network string
	ua      *sipgo.UserAgent
	srv     *sipgo.Server
	client  *sipgo.Client
	dialog  *sipgo.DialogServerCache
	dua     *sipgo.DialogUA

	mu       sync.Mutex
	invites  []*sip.Request
	sessions []*sipgo.DialogServerSession
	byes     chan *sip.Request
	acks     []*sip.Request
	onInvite func(*sip.Request, *sipgo.DialogServerSession)
}

func startPeer(t *testing.T, host string) *sipPeer {
	t.Helper()
	return startPeerOn(t, "udp", host)
}

// startPeerOn is startPeer on network (udp or tcp). Over TCP the peer's
// requests leave on connections from ephemeral ports, as phones' do.
func startPeerOn(t *testing.T, network, host string) *sipPeer {
	t.Helper()
	ua, srv := newServer(t, sipgo.WithUserAgent("peer-"+host))
	peer := &sipPeer{t: t, ua: ua, srv: srv, byes: make(chan *sip.Request, 8)}
	var contact sip.ContactHeader
	// Handlers first (sipgo's handler map is not synchronised), then
	// serve, then the client: sending from the listening socket needs it
	// registered with the transport layer.
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		peer.mu.Lock()
		peer.invites = append(peer.invites, req)
		h := peer.onInvite
		peer.mu.Unlock()
		if to := req.To(); to != nil && to.Params.Has("tag") {
			// re-INVITE: accept with the same SDP back.
			res := sip.NewResponseFromRequest(req, 200, "OK", []byte(strings.ReplaceAll(testSDP, "127.0.0.1", host)))
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			res.AppendHeader(&contact)
			tx.Respond(res)
			<-tx.Acks()
			return
		}
		s, err := peer.dialog.ReadInvite(req, tx)
		if err != nil {
			t.Errorf("ReadInvite: %v", err)
			return
		}
		peer.mu.Lock()
		peer.sessions = append(peer.sessions, s)
		peer.mu.Unlock()
		if h != nil {
			h(req, s)
		}
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		peer.mu.Lock()
		peer.acks = append(peer.acks, req)
		peer.mu.Unlock()
		peer.dialog.ReadAck(req, tx)
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		peer.byes <- req
		if err := peer.dialog.ReadBye(req, tx); err != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		//lint:ignore SA1029 sipgo defines this key as a string; it is its API
		readyCtx := context.WithValue(ctx, sipgo.ListenReadyCtxKey,
			sipgo.ListenReadyFuncCtxValue(func(_, addr string) { ready <- addr }))
		srv.ListenAndServe(readyCtx, network, host+":0")
	}()
	var addr string
	select {
	case addr = <-ready:
	case <-done:
		t.Fatal("peer did not start listening")
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitServing(t, network, addr)
	client, p := servingClient(t, ua, network, addr)
	contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "peer", Host: host, Port: p, UriParams: sip.NewParams()}}
	if network != "udp" {
		contact.Address.UriParams.Add("transport", network)
	}
	peer.network = network
	peer.addr, peer.client = addr, client
	peer.dialog = sipgo.NewDialogServerCache(client, contact)
	peer.dua = &sipgo.DialogUA{Client: client, ContactHDR: contact}
	return peer
}

func (p *sipPeer) lastInvite() *sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.invites) == 0 {
		return nil
	}
	return p.invites[len(p.invites)-1]
}

// dialogSession returns the peer's last answered dialog.
func (p *sipPeer) dialogSession(t *testing.T) *sipgo.DialogServerSession {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sessions) == 0 {
		t.Fatal("no dialog answered")
	}
	return p.sessions[len(p.sessions)-1]
}

// answer makes the peer answer INVITEs with 180 then code (200 with SDP).
func (p *sipPeer) answer(code int) {
	host, _, _ := net.SplitHostPort(p.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onInvite = func(req *sip.Request, s *sipgo.DialogServerSession) {
		s.Respond(180, "Ringing", nil)
		if code == 200 {
			s.RespondSDP([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", host)))
			return
		}
		s.Respond(code, "Rejected", nil)
	}
}

// startCallGateway runs a gateway with the PBX peer trusted.
func startCallGateway(t *testing.T, pbx string, opts CallOptions) (*B2BUA, *prometheus.Registry, string) {
	t.Helper()
	return startCallGatewayClock(t, pbx, opts, nil)
}

// startCallGatewayClock is startCallGateway with the gateway's clock.
func startCallGatewayClock(t *testing.T, pbx string, opts CallOptions, now func() time.Time) (*B2BUA, *prometheus.Registry, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	if opts.Resolver == nil {
		opts.Resolver = mapResolver{"sip:alice@example.com": {"alice@example.com", "Alice"}}
	}
	b := runGateway(t, Config{
		Listen:      []Listener{{"udp", "127.0.0.1:0"}, {"tcp", "127.0.0.1:0"}},
		PBX:         "sip:" + pbx,
		PBXTimeout:  5 * time.Second,
		Now:         now,
		CallOptions: opts,
	}, reg, nil)
	return b, reg, listenerAddr(t, b, "udp")
}

// call sends an INVITE from the phone through the gateway.
func (p *sipPeer) call(t *testing.T, gw, to string, sdp string, hdrs ...sip.Header) (*sipgo.DialogClientSession, *sip.Response) {
	t.Helper()
	var uri sip.Uri
	if err := sip.ParseUri(to, &uri); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.INVITE, uri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "example.com"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if sdp != "" {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(sdp))
	}
	req.SetDestination(gw)
	req.SetTransport(strings.ToUpper(p.network))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatalf("INVITE: %v", err)
	}
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
	if err != nil {
		if e, ok := err.(*sipgo.ErrDialogResponse); ok {
			return s, e.Res
		}
		if e, ok := err.(sipgo.ErrDialogResponse); ok {
			return s, e.Res
		}
		t.Fatalf("WaitAnswer: %v", err)
	}
	return s, s.InviteResponse
}

func metric(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestCallPhoneToPBX(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	media := &fakeMedia{}
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: media})
	phone := startPeer(t, "127.0.0.1")

	s, res := phone.call(t, gw, "sip:bob@example.com", testSDP,
		sip.NewHeader("Call-Info", "<xmpp:mallory@example.com>;purpose=impp, <http://example.com/a.png>;purpose=icon"))
	if res.StatusCode != 200 {
		t.Fatalf("phone got %d, want 200", res.StatusCode)
	}
	if !strings.Contains(string(res.Body()), "192.0.2.1") || strings.Contains(string(res.Body()), "127.0.0.2") {
		t.Errorf("answer SDP to the phone not anchored:\n%s", res.Body())
	}
	if err := s.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}

	inv := pbx.lastInvite()
	if inv == nil {
		t.Fatal("the PBX got no INVITE")
	}
	if inv.CallID().Value() == s.InviteRequest.CallID().Value() {
		t.Errorf("B-leg Call-ID = the phone's %q, want its own", inv.CallID().Value())
	}
	if n := len(inv.GetHeaders("Via")); n != 1 {
		t.Errorf("PBX saw %d Vias, want only the gateway's", n)
	}
	var infos []string
	for _, h := range inv.GetHeaders("Call-Info") {
		infos = append(infos, h.Value())
	}
	all := strings.Join(infos, ", ")
	if strings.Contains(all, "mallory") || !strings.Contains(all, "<xmpp:alice@example.com>;purpose=impp") || !strings.Contains(all, "purpose=icon") {
		t.Errorf("PBX saw Call-Info %q, want alice stamped, mallory stripped, the icon kept", all)
	}
	if !strings.Contains(string(inv.Body()), "192.0.2.1") {
		t.Errorf("offer to the PBX not anchored:\n%s", inv.Body())
	}
	if f := inv.From(); f.DisplayName != "Alice" {
		t.Errorf("From display name = %q, want the identity's name filled in", f.DisplayName)
	}
	if got := metric(t, b.m.CallInfo.WithLabelValues("stripped")); got != 1 {
		t.Errorf("callinfo stripped = %v, want 1", got)
	}
	if got := metric(t, b.m.CallInfo.WithLabelValues("stamped")); got != 1 {
		t.Errorf("callinfo stamped = %v, want 1", got)
	}
	if got := metric(t, b.m.CallsActive); got != 1 {
		t.Errorf("calls_active = %v during the call, want 1", got)
	}

	// The phone hangs up: the PBX gets a BYE, the media is released.
	if err := s.Bye(context.Background()); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	select {
	case bye := <-pbx.byes:
		if bye.CallID().Value() != inv.CallID().Value() {
			t.Errorf("BYE on Call-ID %q, want the B-leg's %q", bye.CallID().Value(), inv.CallID().Value())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the PBX got no BYE")
	}
	waitCallsEnded(t, b)
	ops, deleted := media.state()
	if strings.Join(ops, ",") != "offer:a,answer:b" || len(deleted) != 1 {
		t.Errorf("media ops = %v, deleted %v; want offer:a,answer:b and one delete", ops, deleted)
	}
	if got := metric(t, b.m.Calls.WithLabelValues("phone", "answered")); got != 1 {
		t.Errorf("calls_total{phone,answered} = %v, want 1", got)
	}
}

// waitCallsEnded waits for the gateway's call table to empty (the BYE
// answer reaches the phone just before the teardown finishes).
func waitCallsEnded(t *testing.T, b *B2BUA) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if left := b.waitIdle(ctx); left != 0 {
		t.Fatalf("%d calls still active", left)
	}
	if got := metric(t, b.m.CallsActive); got != 0 {
		t.Errorf("calls_active = %v after the call, want 0", got)
	}
}

func TestCallRejectedByPBX(t *testing.T) {
	for _, code := range []int{486, 603, 404} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			pbx := startPeer(t, "127.0.0.2")
			pbx.answer(code)
			b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
			phone := startPeer(t, "127.0.0.1")
			_, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
			if res.StatusCode != code {
				t.Fatalf("phone got %d, want %d", res.StatusCode, code)
			}
			waitCallsEnded(t, b)
			if got := metric(t, b.m.Calls.WithLabelValues("phone", "rejected")); got != 1 {
				t.Errorf("calls_total{phone,rejected} = %v, want 1", got)
			}
		})
	}
}

func TestCallMediaErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: no m= line", rtprelay.ErrBadSDP), 488},
		{rtprelay.ErrNoPorts, 503},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			pbx := startPeer(t, "127.0.0.2")
			pbx.answer(200)
			b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{err: tc.err}})
			phone := startPeer(t, "127.0.0.1")
			_, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
			if res.StatusCode != tc.code {
				t.Fatalf("phone got %d, want %d", res.StatusCode, tc.code)
			}
			if tc.code == 503 && res.GetHeader("Retry-After") == nil {
				t.Error("503 without Retry-After")
			}
			if pbx.lastInvite() != nil {
				t.Error("the PBX got an INVITE for a call the gateway refused")
			}
			waitCallsEnded(t, b)
		})
	}
}

func TestCallPBXToRegisteredPhone(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	phone := startPeer(t, "127.0.0.1")
	phone.answer(200)
	media := &fakeMedia{}
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: media,
		Resolver: mapResolver{"sip:carol@example.com": {"carol@example.com", "Carol"}}})
	token := bindingToken("sip:bob@example.com", "sip:bob@"+phone.addr)
	if err := b.bindings.Put(context.Background(), Binding{Token: token, AOR: "sip:bob@example.com",
		Contact: "sip:bob@" + phone.addr, Source: phone.addr, Transport: "UDP",
		Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	// The PBX calls the gateway contact it has for bob, asserting carol
	// and claiming someone else in Call-Info: the resolution wins.
	var uri sip.Uri
	sip.ParseUri("sip:"+token+"@"+gw, &uri)
	req := sip.NewRequest(sip.INVITE, uri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "+15550001", Host: "pbx.example.com"}, Params: sip.NewParams()}
	from.Params.Add("tag", "pbx1")
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:carol@example.com>"))
	req.AppendHeader(sip.NewHeader("Call-Info", "<xmpp:someone@example.com>;purpose=impp"))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", "127.0.0.2")))
	req.SetDestination(gw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pbx.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("PBX INVITE toward the phone: %v", err)
	}
	s.Ack(ctx)
	inv := phone.lastInvite()
	if inv == nil {
		t.Fatal("the phone got no INVITE")
	}
	if inv.Recipient.User != "bob" {
		t.Errorf("phone INVITE Request-URI %s, want its registered contact", inv.Recipient.String())
	}
	var infos []string
	for _, h := range inv.GetHeaders("Call-Info") {
		infos = append(infos, h.Value())
	}
	if got := strings.Join(infos, ", "); got != "<xmpp:carol@example.com>;purpose=impp" {
		t.Errorf("phone saw Call-Info %q, want only carol (resolved from P-Asserted-Identity)", got)
	}
	if got := metric(t, b.m.Calls.WithLabelValues("pbx", "answered")); got != 0 {
		t.Errorf("calls_total counted before the end: %v", got)
	}
	// The phone hangs up this time.
	phoneSession := phone.dialogSession(t)
	if err := phoneSession.Bye(ctx); err != nil {
		t.Fatalf("phone BYE: %v", err)
	}
	select {
	case <-pbx.byes:
	case <-time.After(10 * time.Second):
		t.Fatal("the PBX got no BYE")
	}
	waitCallsEnded(t, b)
	if got := metric(t, b.m.Calls.WithLabelValues("pbx", "answered")); got != 1 {
		t.Errorf("calls_total{pbx,answered} = %v, want 1", got)
	}
}

func TestInDialogUnknown481(t *testing.T) {
	_, _, gw := startCallGateway(t, "127.0.0.2:9", CallOptions{})
	phone := startPeer(t, "127.0.0.1")
	var uri sip.Uri
	sip.ParseUri("sip:bob@"+gw, &uri)
	req := sip.NewRequest(sip.BYE, uri)
	to := &sip.ToHeader{Address: uri, Params: sip.NewParams()}
	to.Params.Add("tag", "nosuchdialog")
	req.AppendHeader(to)
	req.SetDestination(gw)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := phone.client.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 481 {
		t.Errorf("BYE for an unknown dialog = %d, want 481", res.StatusCode)
	}
}

func TestCallAdmissionMaxCalls(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}, MaxCalls: 1})
	phone := startPeer(t, "127.0.0.1")
	s, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 200 {
		t.Fatalf("first call = %d, want 200", res.StatusCode)
	}
	s.Ack(context.Background())
	_, res = phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Errorf("call over max_calls = %d (Retry-After %v), want 503 with Retry-After", res.StatusCode, res.GetHeader("Retry-After"))
	}
	if got := metric(t, b.m.Rejected.WithLabelValues("max_calls")); got != 1 {
		t.Errorf("overload rejected{max_calls} = %v, want 1", got)
	}
	s.Bye(context.Background())
	waitCallsEnded(t, b)
}

func TestDrainWaitsForCallsThenHangsUp(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	b, _, gw := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
	phone := startPeer(t, "127.0.0.1")
	s, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 200 {
		t.Fatalf("call = %d, want 200", res.StatusCode)
	}
	s.Ack(context.Background())

	// A drain whose deadline has passed ends the call on both legs.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if left := b.Drain(ctx); left != 1 {
		t.Errorf("Drain with an expired deadline = %d, want 1 call left", left)
	}
	for name, ch := range map[string]chan *sip.Request{"PBX": pbx.byes, "phone": phone.byes} {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Errorf("the %s got no BYE after the drain deadline", name)
		}
	}
	if n := b.ActiveCalls(); n != 0 {
		t.Errorf("ActiveCalls after the hangup = %d, want 0", n)
	}
	// Draining: new calls are refused.
	_, res = phone.call(t, gw, "sip:bob@example.com", testSDP)
	if res.StatusCode != 503 {
		t.Errorf("INVITE while draining = %d, want 503", res.StatusCode)
	}
}

// TestCallPhoneOverTCP: a phone on TCP (requests from an ephemeral port,
// as behind NAT) calls the PBX on UDP; the PBX hangs up and the BYE
// reaches the phone over its own connection.
func TestCallPhoneOverTCP(t *testing.T) {
	pbx := startPeer(t, "127.0.0.2")
	pbx.answer(200)
	b, _, _ := startCallGateway(t, pbx.addr, CallOptions{Media: &fakeMedia{}})
	var gwTCP string
	for _, a := range b.Addrs() {
		if strings.HasPrefix(a, "tcp://") {
			gwTCP = strings.TrimPrefix(a, "tcp://")
		}
	}
	phone := startPeerOn(t, "tcp", "127.0.0.1")
	s, res := phone.call(t, gwTCP, "sip:bob@example.com", testSDP)
	if res.StatusCode != 200 {
		t.Fatalf("phone over TCP got %d, want 200", res.StatusCode)
	}
	if err := s.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pbx.dialogSession(t).Bye(ctx); err != nil {
		t.Fatalf("PBX BYE: %v", err)
	}
	select {
	case bye := <-phone.byes:
		if bye.Transport() != "TCP" {
			t.Errorf("BYE reached the phone over %s, want TCP", bye.Transport())
		}
	case <-ctx.Done():
		t.Fatal("the phone got no BYE over TCP")
	}
	waitCallsEnded(t, b)
}

// TestCallLoopDetected: sip.pbx pointing at the gateway itself makes the
// B-leg INVITE come back from an untrusted address: 482, not 70 calls.
func TestCallLoopDetected(t *testing.T) {
	// The gateway's own UDP port is only known after Listen: point sip.pbx
	// at a relay socket that sends everything back to the gateway.
	loop, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	b, _, gw := startCallGateway(t, loop.LocalAddr().String(), CallOptions{})
	gwAddr, _ := net.ResolveUDPAddr("udp", gw)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := loop.ReadFrom(buf)
			if err != nil {
				return
			}
			// Forward INVITEs (only) back to the gateway, unchanged.
			if strings.HasPrefix(string(buf[:n]), "INVITE ") {
				loop.WriteTo(buf[:n], gwAddr)
			}
		}
	}()
	phone := startPeer(t, "127.0.0.1")
	_, res := phone.call(t, gw, "sip:bob@example.com", testSDP)
	// The 482 goes to the looped INVITE's top Via, the gateway's own, so
	// it ends the B-leg transaction and reaches the phone.
	if res.StatusCode != 482 {
		t.Errorf("looping call = %d, want 482", res.StatusCode)
	}
	waitCallsEnded(t, b)
}
