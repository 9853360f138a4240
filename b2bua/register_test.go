package b2bua

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeRegistrar is a minimal RFC 3261 registrar on 127.0.0.1 (UDP) that
// optionally challenges with digest (password set), for the PBX's side.
type fakeRegistrar struct {
	addr     string
	password string
	proxy    bool // challenge with 407 (Proxy-Authenticate/Proxy-Authorization)

	mu       sync.Mutex
	seen     []*sip.Request            // every REGISTER received
	bindings map[string]map[string]int // aor -> contact -> expires
}

func startRegistrar(t *testing.T, password string) *fakeRegistrar {
	t.Helper()
	_, srv := newServer(t, sipgo.WithUserAgent("fake-pbx"))
	c := listenUDP(t, "127.0.0.1")
	r := &fakeRegistrar{addr: c.LocalAddr().String(), password: password, bindings: map[string]map[string]int{}}
	srv.OnRegister(r.onRegister)
	// Calls to sip:answer@… are answered 200 with SDP (ACK and BYE
	// taken); any other INVITE gets 486, so stray INVITEs (the torture
	// messages) leave no call up.
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if req.Recipient.User != "answer" {
			tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(strings.ReplaceAll(testSDP, "127.0.0.1", "127.0.0.2")))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.NewHeader("Contact", "<sip:pbx@"+r.addr+">"))
		tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	serveUDP(t, srv, c)
	return r
}

const testNonce = "6b9f1c0d2e"

func (r *fakeRegistrar) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, req.Clone())
	if r.password != "" {
		ok := false
		authz, code, reason, chal := "Authorization", 401, "Unauthorized", "WWW-Authenticate"
		if r.proxy {
			authz, code, reason, chal = "Proxy-Authorization", 407, "Proxy Authentication Required", "Proxy-Authenticate"
		}
		if h := req.GetHeader(authz); h != nil {
			if cr, err := digest.ParseCredentials(h.Value()); err == nil {
				want, err := digest.Digest(&digest.Challenge{Realm: "pbx", Nonce: testNonce, QOP: []string{"auth"}, Algorithm: "MD5"},
					digest.Options{Method: "REGISTER", URI: cr.URI, Username: cr.Username, Password: r.password, Cnonce: cr.Cnonce, Count: cr.Nc})
				ok = err == nil && want.Response == cr.Response
			}
		}
		if !ok {
			res := sip.NewResponseFromRequest(req, code, reason, nil)
			res.AppendHeader(sip.NewHeader(chal, `Digest realm="pbx", nonce="`+testNonce+`", qop="auth", algorithm=MD5`))
			tx.Respond(res)
			return
		}
	}
	aor := aorOf(req.To().Address)
	if r.bindings[aor] == nil {
		r.bindings[aor] = map[string]int{}
	}
	exp := 3600
	if h := req.GetHeader("Expires"); h != nil {
		exp, _ = strconv.Atoi(h.Value())
	}
	for _, h := range req.GetHeaders("Contact") {
		c := h.(*sip.ContactHeader)
		if c.Address.Wildcard {
			clear(r.bindings[aor])
			continue
		}
		e := exp
		if v, ok := c.Params.Get("expires"); ok {
			e, _ = strconv.Atoi(v)
		}
		if e == 0 {
			delete(r.bindings[aor], c.Address.String())
		} else {
			r.bindings[aor][c.Address.String()] = min(e, 1800) // the registrar shortens
		}
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for c, e := range r.bindings[aor] {
		res.AppendHeader(sip.NewHeader("Contact", "<"+c+">;expires="+strconv.Itoa(e)))
	}
	tx.Respond(res)
}

func (r *fakeRegistrar) last() *sip.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return nil
	}
	return r.seen[len(r.seen)-1]
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startGateway runs a gateway in front of pbx with a fake clock.
func startGateway(t *testing.T, pbx string) (*B2BUA, *fakeClock, string) {
	t.Helper()
	return startGatewayOn(t, "127.0.0.1:0", pbx)
}

func startGatewayOn(t *testing.T, listen, pbx string) (*B2BUA, *fakeClock, string) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := runGateway(t, Config{
		Listen:     []Listener{{"udp", listen}},
		PBX:        "sip:" + pbx,
		Now:        clk.Now,
		PBXTimeout: time.Second,
	}, nil, nil)
	_, port, _ := net.SplitHostPort(listenerAddr(t, b, "udp"))
	return b, clk, "127.0.0.1:" + port
}

// phone sends REGISTERs for one AOR and contact, like a UA would.
type phone struct {
	t       *testing.T
	client  *sipgo.Client
	gw      string
	user    string
	contact string
	callID  string
	cseq    uint32
}

func newPhone(t *testing.T, gw, user, contact string) *phone {
	t.Helper()
	c := newClient(t, []sipgo.UserAgentOption{sipgo.WithUserAgent("test-phone")}, sipgo.WithClientNAT())
	return &phone{t: t, client: c, gw: gw, user: user, contact: contact, callID: sip.GenerateTagN(12) + "@phone", cseq: 1}
}

func (p *phone) request(contact, expires string) *sip.Request {
	p.t.Helper()
	var ruri, aor sip.Uri
	if err := sip.ParseUri("sip:example.com", &ruri); err != nil {
		p.t.Fatal(err)
	}
	if err := sip.ParseUri("sip:"+p.user+"@example.com", &aor); err != nil {
		p.t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, ruri)
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", "ph"+p.callID[:6])
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	cid := sip.CallIDHeader(p.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: p.cseq, MethodName: sip.REGISTER})
	p.cseq++
	req.AppendHeader(sip.NewHeader("Contact", contact))
	if expires != "" {
		req.AppendHeader(sip.NewHeader("Expires", expires))
	}
	req.SetDestination(p.gw)
	return req
}

func (p *phone) register(expires string) *sip.Response {
	p.t.Helper()
	return p.do(p.request("<"+p.contact+">", expires))
}

func (p *phone) do(req *sip.Request) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := p.client.Do(ctx, req)
	if err != nil {
		p.t.Fatalf("REGISTER: %v", err)
	}
	return res
}

func contactURIs(res *sip.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.(*sip.ContactHeader).Address.String())
	}
	return out
}

func TestRegisterPassthrough(t *testing.T) {
	pbx := startRegistrar(t, "")
	b, _, gw := startGateway(t, pbx.addr)
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062;transport=udp")

	res := alice.register("600")
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d %s, want 200", res.StatusCode, res.Reason)
	}
	if got := contactURIs(res); len(got) != 1 || got[0] != alice.contact {
		t.Errorf("200 Contacts = %v, want [%s] (rewritten back to the phone's contact)", got, alice.contact)
	}
	if c := res.GetHeader("Contact").(*sip.ContactHeader); c.Params.GetOr("expires", "") != "600" {
		t.Errorf("200 Contact expires = %q, want 600", c.Params.GetOr("expires", ""))
	}

	fwd := pbx.last()
	gc := fwd.GetHeader("Contact").(*sip.ContactHeader)
	if !strings.HasPrefix(gc.Address.User, tokenPrefix) || gc.Address.Host+":"+strconv.Itoa(gc.Address.Port) != gw {
		t.Errorf("Contact at the PBX = %s, want <sip:%s…@%s>", gc.Address.String(), tokenPrefix, gw)
	}
	if fwd.CallID().Value() != alice.callID || fwd.CSeq().SeqNo != 1 {
		t.Errorf("PBX saw Call-ID %s CSeq %d, want the phone's %s 1", fwd.CallID().Value(), fwd.CSeq().SeqNo, alice.callID)
	}
	if fwd.Source() != gw {
		t.Errorf("REGISTER reached the PBX from %s, want the gateway's listening socket %s", fwd.Source(), gw)
	}
	if n := len(fwd.GetHeaders("Via")); n != 1 {
		t.Errorf("PBX saw %d Via headers, want 1 (the gateway's)", n)
	}

	bs, err := b.Bindings().ByAOR(context.Background(), "sip:alice@example.com")
	if err != nil || len(bs) != 1 {
		t.Fatalf("ByAOR = %v %v, want one binding", bs, err)
	}
	if bs[0].Contact != alice.contact || bs[0].Token != gc.Address.User || bs[0].Transport != "UDP" || bs[0].Source == "" {
		t.Errorf("binding = %+v, want contact %s token %s from UDP", bs[0], alice.contact, gc.Address.User)
	}
	// The registrar granted 600 s; the binding follows it.
	if got := bs[0].Expires.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); got != 600*time.Second {
		t.Errorf("binding lifetime = %v, want 600s", got)
	}

	// Refresh: same gateway contact, the CSeq progression passes through.
	res = alice.register("")
	if res.StatusCode != 200 || pbx.last().CSeq().SeqNo != 2 {
		t.Errorf("refresh = %d, PBX CSeq %d; want 200, 2", res.StatusCode, pbx.last().CSeq().SeqNo)
	}
	if got := pbx.last().GetHeader("Contact").(*sip.ContactHeader).Address.User; got != gc.Address.User {
		t.Errorf("refresh gateway contact %s, want the same token %s", got, gc.Address.User)
	}
	// The registrar shortened 3600 to 1800: the binding and the phone see it.
	if c := res.GetHeader("Contact").(*sip.ContactHeader); c.Params.GetOr("expires", "") != "1800" {
		t.Errorf("refresh Contact expires = %q, want 1800", c.Params.GetOr("expires", ""))
	}

	// A second phone on the same AOR: both contacts come back as the phones'.
	desk := newPhone(t, gw, "alice", "sip:alice@192.0.2.11:5060")
	res = desk.register("600")
	got := contactURIs(res)
	if res.StatusCode != 200 || len(got) != 2 || !(got[0] == alice.contact && got[1] == desk.contact || got[1] == alice.contact && got[0] == desk.contact) {
		t.Errorf("second phone REGISTER = %d %v, want 200 with both phones' contacts", res.StatusCode, got)
	}
	if g := testutil.ToFloat64(b.m.Registrations); g != 2 {
		t.Errorf("cusax_registrations_active = %v, want 2", g)
	}
	if g := testutil.ToFloat64(b.m.Requests.WithLabelValues("REGISTER", "out")); g != 3 {
		t.Errorf(`cusax_sip_requests_total{REGISTER,out} = %v, want 3`, g)
	}
}

func TestRegisterDigestChallengeRelayed(t *testing.T) {
	pbx := startRegistrar(t, "s3cret")
	b, _, gw := startGateway(t, pbx.addr)
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062")

	req := alice.request("<"+alice.contact+">", "300")
	res := alice.do(req)
	if res.StatusCode != 401 || res.GetHeader("WWW-Authenticate") == nil {
		t.Fatalf("REGISTER = %d (WWW-Authenticate %v), want 401 with the PBX's challenge", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 0 {
		t.Errorf("bindings after 401 = %d, want 0 (identity not trusted before 200)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := alice.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: "s3cret"})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("REGISTER with Authorization = %v %v, want 200", res, err)
	}
	if pbx.last().GetHeader("Authorization") == nil || pbx.last().CSeq().SeqNo != 2 {
		t.Errorf("PBX saw Authorization %v CSeq %d, want the phone's Authorization and CSeq 2", pbx.last().GetHeader("Authorization"), pbx.last().CSeq().SeqNo)
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 1 {
		t.Errorf("bindings after 200 = %d, want 1", n)
	}

	// A wrong password is refused by the PBX, relayed, and binds nothing new.
	bob := newPhone(t, gw, "bob", "sip:bob@192.0.2.12:5060")
	req = bob.request("<"+bob.contact+">", "300")
	res = bob.do(req)
	res, err = bob.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "bob", Password: "wrong"})
	if err != nil || res.StatusCode != 401 {
		t.Errorf("REGISTER with a wrong password = %v %v, want 401", res, err)
	}
	if bs, _ := b.Bindings().ByAOR(context.Background(), "sip:bob@example.com"); len(bs) != 0 {
		t.Errorf("bob's bindings = %v, want none", bs)
	}
}

func TestUnregister(t *testing.T) {
	pbx := startRegistrar(t, "")
	b, _, gw := startGateway(t, pbx.addr)
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062")
	if res := alice.register("600"); res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d", res.StatusCode)
	}
	if g := testutil.ToFloat64(b.m.Registrations); g != 1 {
		t.Errorf("cusax_registrations_active = %v, want 1", g)
	}
	res := alice.register("0")
	if res.StatusCode != 200 || len(contactURIs(res)) != 0 {
		t.Errorf("un-REGISTER = %d %v, want 200 without contacts", res.StatusCode, contactURIs(res))
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 0 {
		t.Errorf("bindings after Expires: 0 = %d, want 0", n)
	}
	if g := testutil.ToFloat64(b.m.Registrations); g != 0 {
		t.Errorf("cusax_registrations_active = %v, want 0", g)
	}

	// Contact: * removes every binding of the AOR.
	alice.register("600")
	newPhone(t, gw, "alice", "sip:alice@192.0.2.11:5060").register("600")
	if res := alice.do(alice.request("*", "0")); res.StatusCode != 200 {
		t.Errorf("REGISTER Contact: * = %d, want 200", res.StatusCode)
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 0 {
		t.Errorf("bindings after Contact: * = %d, want 0", n)
	}
	if res := alice.do(alice.request("*", "60")); res.StatusCode != 400 {
		t.Errorf("Contact: * with Expires 60 = %d, want 400", res.StatusCode)
	}
}

func TestRegistrationExpires(t *testing.T) {
	pbx := startRegistrar(t, "")
	b, clk, gw := startGateway(t, pbx.addr)
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062")
	alice.register("60")
	bs, _ := b.Bindings().ByAOR(context.Background(), "sip:alice@example.com")
	if len(bs) != 1 {
		t.Fatalf("bindings = %v, want one", bs)
	}
	clk.Advance(59 * time.Second)
	b.sweep(context.Background())
	if g := testutil.ToFloat64(b.m.Registrations); g != 1 {
		t.Errorf("gauge before expiry = %v, want 1", g)
	}
	clk.Advance(time.Second)
	if _, err := b.Bindings().ByToken(context.Background(), bs[0].Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("ByToken after expiry = %v, want ErrNotFound", err)
	}
	b.sweep(context.Background())
	if g := testutil.ToFloat64(b.m.Registrations); g != 0 {
		t.Errorf("gauge after expiry = %v, want 0", g)
	}
}

func TestRegisterPBXDown(t *testing.T) {
	// A port nobody answers on: ICMP refusal or timeout, never a hang.
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	_, _, gw := startGateway(t, addr)
	res := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062").register("60")
	if res.StatusCode != 503 && res.StatusCode != 408 {
		t.Errorf("REGISTER with the PBX down = %d, want 408 (or 503)", res.StatusCode)
	}
}

func TestMemoryBindingsExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := NewMemoryBindings(nil)
		s.Put(ctx, Binding{Token: "a", AOR: "sip:alice@example.com", Expires: time.Now().Add(time.Minute)})
		s.Put(ctx, Binding{Token: "b", AOR: "sip:alice@example.com", Expires: time.Now().Add(time.Hour)})
		s.Put(ctx, Binding{Token: "c", AOR: "sip:bob@example.com", Expires: time.Now().Add(time.Hour)})
		if bs, _ := s.ByAOR(ctx, "sip:alice@example.com"); len(bs) != 2 {
			t.Errorf("ByAOR = %v, want 2", bs)
		}
		time.Sleep(time.Minute)
		if _, err := s.ByToken(ctx, "a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("ByToken(expired) = %v, want ErrNotFound", err)
		}
		if n, _ := s.Len(ctx); n != 2 {
			t.Errorf("Len = %d, want 2", n)
		}
		if n, _ := s.Expire(ctx, time.Now()); n != 1 {
			t.Errorf("Expire = %d, want 1", n)
		}
		s.Delete(ctx, "b")
		s.Delete(ctx, "unknown")
		if bs, _ := s.ByAOR(ctx, "sip:alice@example.com"); len(bs) != 0 {
			t.Errorf("ByAOR after delete = %v, want none", bs)
		}
		if b, err := s.ByToken(ctx, "c"); err != nil || b.AOR != "sip:bob@example.com" {
			t.Errorf("ByToken(c) = %v %v", b, err)
		}
	})
}

// Listening on 0.0.0.0 (the default config), the REGISTER still leaves
// from the listening socket and the contact names a reachable address.
func TestRegisterFromWildcardListener(t *testing.T) {
	pbx := startRegistrar(t, "")
	_, _, gw := startGatewayOn(t, "0.0.0.0:0", pbx.addr)
	if res := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062").register("60"); res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d, want 200", res.StatusCode)
	}
	fwd := pbx.last()
	if fwd.Source() != gw {
		t.Errorf("REGISTER reached the PBX from %s, want the listening socket %s", fwd.Source(), gw)
	}
	if c := fwd.GetHeader("Contact").(*sip.ContactHeader); c.Address.Host+":"+strconv.Itoa(c.Address.Port) != gw {
		t.Errorf("gateway contact %s, want host:port %s", c.Address.String(), gw)
	}
	if v := fwd.Via(); v.Host+":"+strconv.Itoa(v.Port) != gw {
		t.Errorf("Via sent-by %s:%d, want %s", v.Host, v.Port, gw)
	}
}

func TestRegisterProxyChallengeRelayed(t *testing.T) {
	pbx := startRegistrar(t, "s3cret")
	pbx.mu.Lock()
	pbx.proxy = true
	pbx.mu.Unlock()
	b, _, gw := startGateway(t, pbx.addr)
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062")
	req := alice.request("<"+alice.contact+">", "300")
	res := alice.do(req)
	if res.StatusCode != 407 || res.GetHeader("Proxy-Authenticate") == nil {
		t.Fatalf("REGISTER = %d (Proxy-Authenticate %v), want 407 with the PBX's challenge", res.StatusCode, res.GetHeader("Proxy-Authenticate"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := alice.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "alice", Password: "s3cret"})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("REGISTER with Proxy-Authorization = %v %v, want 200", res, err)
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 1 {
		t.Errorf("bindings = %d, want 1", n)
	}
}
