package b2bua

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// gatedBindings holds every Put until routing has missed the binding being
// put: it forces the REGISTER/INVITE race (the PBX's INVITE routed before
// the gateway has processed the REGISTER's 200) on every run.
type gatedBindings struct {
	Bindings
	missOnce sync.Once
	missed   chan struct{} // closed at the first ByToken miss
}

func (g *gatedBindings) ByToken(ctx context.Context, token string) (Binding, error) {
	bd, err := g.Bindings.ByToken(ctx, token)
	if err != nil {
		g.missOnce.Do(func() { close(g.missed) })
	}
	return bd, err
}

func (g *gatedBindings) Put(ctx context.Context, b Binding) error {
	select {
	case <-g.missed:
	case <-ctx.Done():
	}
	return g.Bindings.Put(ctx, b)
}

// racingPBX is a PBX stand-in on UDP that accepts every REGISTER and, from
// inside its REGISTER handler right after writing the 200, INVITEs the
// contact it has just accepted.
type racingPBX struct {
	addr    string
	mu      sync.Mutex
	dua     *sipgo.DialogUA // set once serving (the handler reads it under mu)
	invites chan *sipgo.DialogClientSession
	byes    chan *sip.Request
}

func startRacingPBX(t *testing.T, host string) *racingPBX {
	t.Helper()
	ua, srv := newServer(t, sipgo.WithUserAgent("racing-pbx"))
	conn := listenUDP(t, host)
	p := &racingPBX{addr: conn.LocalAddr().String(), invites: make(chan *sipgo.DialogClientSession, 1),
		byes: make(chan *sip.Request, 1)}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		c, ok := req.Contact(), true
		if c == nil {
			ok = false
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if ok {
			res.AppendHeader(sip.NewHeader("Contact", "<"+c.Address.String()+">;expires=600"))
		}
		if err := tx.Respond(res); err != nil || !ok {
			t.Errorf("PBX: 200 to REGISTER not sent (err %v, contact %v)", err, ok)
			return
		}
		// At once, as a PBX whose user dials the phone the moment it
		// registers: INVITE the gateway contact just accepted.
		inv := sip.NewRequest(sip.INVITE, *c.Address.Clone())
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "carol", Host: "example.com"}, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(8))
		inv.AppendHeader(from)
		inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		inv.SetBody([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", host)))
		inv.SetDestination(net.JoinHostPort(c.Address.Host, strconv.Itoa(c.Address.Port)))
		p.mu.Lock()
		dua := p.dua
		p.mu.Unlock()
		s, err := dua.WriteInvite(context.Background(), inv)
		if err != nil {
			t.Errorf("PBX INVITE: %v", err)
			return
		}
		p.invites <- s
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		p.byes <- req
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	serveUDP(t, srv, conn)
	client, pn := servingClient(t, ua, "udp", p.addr)
	p.mu.Lock()
	p.dua = &sipgo.DialogUA{Client: client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: host, Port: pn}}}
	p.mu.Unlock()
	return p
}

// TestRegisterInviteRace: the PBX INVITEs the phone's new gateway contact
// before the gateway has stored the binding (forced by gatedBindings); the
// call waits for the REGISTER in flight and reaches the phone instead of
// getting 480.
func TestRegisterInviteRace(t *testing.T) {
	pbx := startRacingPBX(t, "127.0.0.2")
	phone := startPeer(t, "127.0.0.1")
	phone.answer(200)
	gated := &gatedBindings{Bindings: NewMemoryBindings(nil), missed: make(chan struct{})}
	b := startGatewayConfig(t, Config{
		Listen:      []Listener{{"udp", "127.0.0.1:0"}},
		PBX:         "sip:" + pbx.addr,
		CallOptions: CallOptions{Media: &fakeMedia{}},
	}, func(b *B2BUA) { b.bindings = gated })
	gw := listenerAddr(t, b, "udp")

	reg := registerRequest(t, gw, "bob", "sip:bob@"+phone.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := phone.client.Do(ctx, reg)
	if err != nil {
		t.Fatalf("REGISTER: %v", err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d, want 200", res.StatusCode)
	}
	var s *sipgo.DialogClientSession
	select {
	case s = <-pbx.invites:
	case <-ctx.Done():
		t.Fatal("the PBX sent no INVITE")
	}
	select {
	case <-gated.missed:
	default:
		t.Fatal("routing never missed the binding: the race was not exercised")
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("PBX INVITE racing the REGISTER's 200: %v, want 200 from the phone", err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if inv := phone.lastInvite(); inv == nil || inv.Recipient.User != "bob" {
		t.Fatalf("phone INVITE = %v, want one to its registered contact", inv)
	}
	if err := phone.dialogSession(t).Bye(ctx); err != nil {
		t.Fatalf("phone BYE: %v", err)
	}
	select {
	case <-pbx.byes:
	case <-ctx.Done():
		t.Fatal("the PBX got no BYE")
	}
	waitCallsEnded(t, b)
}

// registerRequest is a REGISTER for user@example.com with contact, to gw.
func registerRequest(t *testing.T, gw, user, contact string) *sip.Request {
	t.Helper()
	var ruri, aor sip.Uri
	if err := sip.ParseUri("sip:example.com", &ruri); err != nil {
		t.Fatal(err)
	}
	if err := sip.ParseUri("sip:"+user+"@example.com", &aor); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, ruri)
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Contact", "<"+contact+">"))
	req.AppendHeader(sip.NewHeader("Expires", "600"))
	req.SetDestination(gw)
	return req
}

func TestRegFlights(t *testing.T) {
	var f regFlights
	ctx := context.Background()
	if f.wait(ctx, "k", time.Hour) {
		t.Error("wait with nothing in flight waited")
	}
	end1 := f.begin([]string{"k", "a"})
	end2 := f.begin([]string{"k"})
	end1()
	// "k" is still in flight (end2): a wait ends only by ctx.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if !f.wait(cctx, "k", time.Hour) {
		t.Error("wait on a key in flight did not wait")
	}
	if f.wait(ctx, "a", time.Hour) {
		t.Error("a key whose REGISTER ended is still in flight")
	}
	end2()
	if f.wait(ctx, "k", time.Hour) {
		t.Error("a key whose REGISTERs all ended is still in flight")
	}
}

// startGatewayConfig runs a gateway with cfg, 127.0.0.2 trusted as the PBX,
// after letting prepare adjust it (before it serves anything).
func startGatewayConfig(t *testing.T, cfg Config, prepare func(*B2BUA)) *B2BUA {
	t.Helper()
	cfg.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	if cfg.PBXTimeout == 0 {
		cfg.PBXTimeout = 5 * time.Second
	}
	if cfg.Resolver == nil {
		cfg.Resolver = mapResolver{}
	}
	return runGateway(t, cfg, nil, prepare)
}

// TestRegFlightsWaitBounded: a REGISTER that never ends (the PBX does not
// answer it) holds a racing call for at most the bound.
func TestRegFlightsWaitBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var f regFlights
		end := f.begin([]string{"cx-1"})
		defer end()
		start := time.Now()
		if !f.wait(context.Background(), "cx-1", 32*time.Second) {
			t.Fatal("wait on a key in flight did not wait")
		}
		if d := time.Since(start); d != 32*time.Second {
			t.Errorf("wait returned after %v, want the bound 32s", d)
		}
	})
}
