package b2bua

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// trapListener is a TCP listener that only counts connections: it stands
// for an address the gateway must (not) connect to.
func trapListener(t *testing.T, host string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// connected reports whether a connection to ln is already established.
// A dial that reached connect() has completed its handshake on loopback
// before it returned, so it is in the accept queue by now.
func connected(t *testing.T, ln *net.TCPListener) bool {
	t.Helper()
	ln.SetDeadline(time.Now())
	c, err := ln.Accept()
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("trap accept: %v", err)
	}
	return false
}

// TestDialPolicy: over TCP, TLS and WS the gateway does not connect to
// untrusted addresses (the failure is immediate and no connection is made)
// and does connect to trusted ones. WSS is not covered: sipgo's WSS
// transport dials with a net.Dialer of its own (dialpolicy.go).
func TestDialPolicy(t *testing.T) {
	serverTLS, _ := testenv.SelfSignedTLS(t)
	networks := []string{"tcp", "tls", "ws"}
	cfg := Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}, PBX: "sip:127.0.0.2:9", TLS: serverTLS}
	for _, n := range networks {
		cfg.Listen = append(cfg.Listen, Listener{n, "127.0.0.1:0"})
	}
	b := startGatewayConfig(t, cfg, nil)
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			client, _, ok := b.clientFor(network)
			if !ok {
				t.Fatalf("no %s client", network)
			}
			options := func(ctx context.Context, addr string) error {
				var uri sip.Uri
				sip.ParseUri("sip:probe@"+addr, &uri)
				req := sip.NewRequest(sip.OPTIONS, uri)
				req.SetTransport(strings.ToUpper(network))
				req.SetDestination(addr)
				_, err := client.Do(ctx, req)
				return err
			}

			untrusted := trapListener(t, "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := options(ctx, untrusted.Addr().String()); !errors.Is(err, errDialRefused) {
				t.Errorf("OPTIONS over %s to an untrusted address: err %v, want %v", network, err, errDialRefused)
			}
			if connected(t, untrusted) {
				t.Errorf("the gateway connected over %s to an untrusted address", network)
			}

			trusted := trapListener(t, "127.0.0.2")
			dctx, dcancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- options(dctx, trusted.Addr().String()) }()
			deadline, _ := ctx.Deadline()
			trusted.SetDeadline(deadline) // only a bound for the failure case
			c, err := trusted.Accept()
			if err != nil {
				t.Errorf("no %s connection to the trusted address: %v", network, err)
			} else {
				c.Close()
			}
			dcancel()
			<-done
		})
	}
}

// TestCallToGonePhoneConnection: a phone registered over TCP whose
// connection is gone is not dialled back (its address stands for an
// ephemeral port behind NAT); the PBX's call fails at once with 503.
func TestCallToGonePhoneConnection(t *testing.T) {
	pbx, pbxAddr := startUDPPBX(t, "127.0.0.2")
	b := startGatewayConfig(t, Config{
		Listen:      []Listener{{"udp", "127.0.0.1:0"}, {"tcp", "127.0.0.1:0"}},
		PBX:         "sip:" + pbxAddr,
		CallOptions: CallOptions{Media: &fakeMedia{}},
	}, nil)
	gw := listenerAddr(t, b, "udp")
	gone := trapListener(t, "127.0.0.1")
	token := bindingToken("sip:bob@example.com", "sip:bob@bob.invalid;transport=tcp")
	if err := b.bindings.Put(context.Background(), Binding{Token: token, AOR: "sip:bob@example.com",
		Contact: "sip:bob@bob.invalid;transport=tcp", Source: gone.Addr().String(), Transport: "TCP",
		Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(gw)
	pn, _ := strconv.Atoi(port)
	ruri := sip.Uri{Scheme: "sip", User: token, Host: host, Port: pn}
	req := sip.NewRequest(sip.INVITE, ruri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "carol", Host: "example.com"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(strings.ReplaceAll(testSDP, "127.0.0.1", "127.0.0.2")))
	req.SetDestination(gw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pbx.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{})
	var res *sip.Response
	var de *sipgo.ErrDialogResponse
	if errors.As(err, &de) {
		res = de.Res
	}
	if res == nil || res.StatusCode != 503 {
		t.Fatalf("call to a phone whose connection is gone: %v, want 503", err)
	}
	if connected(t, gone) {
		t.Error("the gateway dialled the phone's old connection address")
	}
	waitCallsEnded(t, b)
}
