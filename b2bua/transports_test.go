package b2bua

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// Calls with phones on the connection-oriented listeners (tcp, tls, ws,
// wss) and the PBX on UDP. The phones listen nowhere, as phones behind NAT
// and browsers do: their Contact host is unresolvable (RFC 7118 style
// ".invalid"), so every request toward them must travel over the
// connection they opened.

// uaEnd is one SIP endpoint of these tests (the PBX stand-in or a phone):
// it answers INVITEs with 200 and SDP, records BYEs, and places calls.
type uaEnd struct {
	t      *testing.T
	host   string // for its SDP
	client *sipgo.Client
	dua    *sipgo.DialogUA
	cache  *sipgo.DialogServerCache

	mu       sync.Mutex
	sessions []*sipgo.DialogServerSession
	invites  []*sip.Request
	byes     chan *sip.Request
	// registered is the gateway contact of the last REGISTER (PBX only).
	registered sip.Uri
}

// handlers registers the endpoint's request handlers on srv.
func (e *uaEnd) handlers(srv *sipgo.Server) {
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		e.mu.Lock()
		cache := e.cache
		e.invites = append(e.invites, req)
		e.mu.Unlock()
		s, err := cache.ReadInvite(req, tx)
		if err != nil {
			e.t.Errorf("ReadInvite: %v", err)
			return
		}
		e.mu.Lock()
		e.sessions = append(e.sessions, s)
		e.mu.Unlock()
		// RespondSDP waits for the ACK; it fails when a BYE is handled
		// first (sipgo handles each message in its own goroutine, so a
		// BYE right behind the ACK can overtake it). Callers check what
		// matters: the 200 at the caller, the BYEs.
		if err := s.RespondSDP([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", e.host))); err != nil {
			e.t.Logf("answer INVITE: %v", err)
		}
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		e.mu.Lock()
		cache := e.cache
		e.mu.Unlock()
		cache.ReadAck(req, tx)
	})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		e.byes <- req
		e.mu.Lock()
		cache := e.cache
		e.mu.Unlock()
		if err := cache.ReadBye(req, tx); err != nil {
			tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		}
	})
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		if c := req.Contact(); c != nil {
			e.mu.Lock()
			e.registered = *c.Address.Clone()
			e.mu.Unlock()
			res.AppendHeader(sip.NewHeader("Contact", "<"+c.Address.String()+">;expires=600"))
		}
		tx.Respond(res)
	})
}

func (e *uaEnd) setDialogs(client *sipgo.Client, contact sip.ContactHeader) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.client = client
	e.cache = sipgo.NewDialogServerCache(client, contact)
	e.dua = &sipgo.DialogUA{Client: client, ContactHDR: contact}
}

func (e *uaEnd) lastSession(t *testing.T) *sipgo.DialogServerSession {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.sessions) == 0 {
		t.Fatal("no INVITE answered")
	}
	return e.sessions[len(e.sessions)-1]
}

func (e *uaEnd) lastInvite(t *testing.T) *sip.Request {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.invites) == 0 {
		t.Fatal("no INVITE received")
	}
	return e.invites[len(e.invites)-1]
}

// startUDPPBX is the PBX stand-in on UDP host:0.
func startUDPPBX(t *testing.T, host string) (*uaEnd, string) {
	t.Helper()
	ua, srv := newServer(t, sipgo.WithUserAgent("pbx-"+host))
	e := &uaEnd{t: t, host: host, byes: make(chan *sip.Request, 4)}
	e.handlers(srv)
	conn := listenUDP(t, host)
	addr := conn.LocalAddr().String()
	serveUDP(t, srv, conn)
	client, pn := servingClient(t, ua, "udp", addr)
	e.setDialogs(client, sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "pbx", Host: host, Port: pn}})
	return e, addr
}

// startConnPhone is a phone that only connects (network tcp, tls, ws or
// wss) and is reached back over its connection.
func startConnPhone(t *testing.T, network string, tlsConf *tls.Config) *uaEnd {
	t.Helper()
	opts := []sipgo.UserAgentOption{sipgo.WithUserAgent("phone-" + network)}
	if tlsConf != nil {
		opts = append(opts, sipgo.WithUserAgenTLSConfig(tlsConf))
	}
	ua, srv := newServer(t, opts...)
	e := &uaEnd{t: t, host: "127.0.0.1", byes: make(chan *sip.Request, 4)}
	e.handlers(srv) // sipgo's server handlers also serve requests arriving on client connections
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"),
		sipgo.WithClientLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "bob-" + network + ".invalid",
		UriParams: sip.NewParams()}}
	contact.Address.UriParams.Add("transport", network)
	e.setDialogs(client, contact)
	return e
}

// invite sends an INVITE from e to ruri via dest over transport and waits
// for the answer.
func (e *uaEnd) invite(t *testing.T, ruri sip.Uri, dest, transport string) *sipgo.DialogClientSession {
	t.Helper()
	req := sip.NewRequest(sip.INVITE, ruri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "caller", Host: "example.com"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", e.host)))
	req.SetDestination(dest)
	req.SetTransport(transport)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatalf("INVITE %s: %v", ruri.String(), err)
	}
	if err := s.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("INVITE %s: %v, want 200", ruri.String(), err)
	}
	if err := s.Ack(ctx); err != nil {
		t.Fatalf("ACK: %v", err)
	}
	return s
}

// hangup makes s (a client or server dialog session) send BYE and checks
// that the other end got it, over transport when want is set.
func hangup(t *testing.T, bye func(context.Context) error, other *uaEnd, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	select {
	case req := <-other.byes:
		if want != "" && req.Transport() != want {
			t.Errorf("BYE reached the phone over %s, want %s", req.Transport(), want)
		}
	case <-ctx.Done():
		t.Fatal("the other end got no BYE")
	}
}

// TestCallsOverConnectionListeners: for each connection-oriented listener,
// a phone that only connects registers through the gateway to a UDP PBX,
// is called by the PBX and calls it, and each call is hung up from each
// side; every request toward the phone arrives over its connection.
func TestCallsOverConnectionListeners(t *testing.T) {
	serverTLS, clientTLS := testenv.SelfSignedTLS(t)
	for _, network := range []string{"tcp", "tls", "ws", "wss"} {
		t.Run(network, func(t *testing.T) {
			upper := strings.ToUpper(network)
			pbx, pbxAddr := startUDPPBX(t, "127.0.0.2")
			cfg := Config{
				Listen:      []Listener{{"udp", "127.0.0.1:0"}, {network, "127.0.0.1:0"}},
				PBX:         "sip:" + pbxAddr,
				CallOptions: CallOptions{Media: &fakeMedia{}},
			}
			var phoneTLS *tls.Config
			if network == "tls" || network == "wss" {
				cfg.TLS, phoneTLS = serverTLS, clientTLS
			}
			b := startGatewayConfig(t, cfg, nil)
			gw := listenerAddr(t, b, network)
			phone := startConnPhone(t, network, phoneTLS)

			reg := registerRequest(t, gw, "bob", phone.dua.ContactHDR.Address.String())
			reg.SetTransport(upper)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := phone.client.Do(ctx, reg)
			if err != nil {
				t.Fatalf("REGISTER over %s: %v", network, err)
			}
			if res.StatusCode != 200 {
				t.Fatalf("REGISTER over %s = %d, want 200", network, res.StatusCode)
			}
			pbx.mu.Lock()
			gwContact := pbx.registered
			pbx.mu.Unlock()
			if !strings.HasPrefix(gwContact.User, tokenPrefix) {
				t.Fatalf("PBX registered %s, want a gateway contact", gwContact.String())
			}

			for _, by := range []string{"pbx", "phone"} {
				// The PBX calls the phone.
				s := pbx.invite(t, gwContact, net.JoinHostPort(gwContact.Host, strconv.Itoa(gwContact.Port)), "UDP")
				if inv := phone.lastInvite(t); inv.Transport() != upper {
					t.Errorf("INVITE reached the phone over %s, want %s", inv.Transport(), upper)
				}
				if by == "pbx" {
					hangup(t, s.Bye, phone, upper)
				} else {
					hangup(t, phone.lastSession(t).Bye, pbx, "")
				}
				waitCallsEnded(t, b)

				// The phone calls the PBX.
				var ruri sip.Uri
				sip.ParseUri("sip:carol@example.com", &ruri)
				ps := phone.invite(t, ruri, gw, upper)
				if by == "pbx" {
					hangup(t, pbx.lastSession(t).Bye, phone, upper)
				} else {
					hangup(t, ps.Bye, pbx, "")
				}
				waitCallsEnded(t, b)
			}
		})
	}
}
