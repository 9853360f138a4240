package b2bua

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startGatewayTo runs a real-clock gateway (UDP and TCP on loopback) in
// front of pbx (host:port).
func startGatewayTo(t *testing.T, pbx string) (*B2BUA, string) {
	t.Helper()
	b := runGateway(t, Config{
		Listen: []Listener{{"udp", "127.0.0.1:0"}, {"tcp", "127.0.0.1:0"}},
		Domain: "example.com",
		PBX:    "sip:" + pbx,
	}, nil, nil)
	return b, listenerAddr(t, b, "udp")
}

// optionsVia sends OPTIONS for uri to proxy and returns the final response.
func optionsVia(t *testing.T, proxy, uri string) *sip.Response {
	t.Helper()
	c := newClient(t, []sipgo.UserAgentOption{sipgo.WithUserAgent("test")})
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.OPTIONS, u)
	req.SetDestination(proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("OPTIONS %s via %s: %v", uri, proxy, err)
	}
	return res
}

// TestIntegrationBaresipRegistersThroughGateway: baresip registers through
// the gateway to Kamailio; Kamailio's location table then routes the AOR
// to the gateway, and the gateway's binding holds baresip's contact.
func TestIntegrationBaresipRegistersThroughGateway(t *testing.T) {
	testenv.Require(t)
	k := testenv.StartKamailioOptions(t, testenv.KamailioOptions{Domains: []string{"example.com"}})
	b, gw := startGatewayTo(t, k.Addr)

	if res := optionsVia(t, k.Addr, "sip:alice@example.com"); res.StatusCode != 404 {
		t.Errorf("OPTIONS to the AOR before registration = %d, want 404", res.StatusCode)
	}
	phone := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gw, User: "alice", Domain: "example.com"})
	if err := phone.WaitRegistered(15 * time.Second); err != nil {
		t.Fatal(err)
	}

	bs, err := b.Bindings().ByAOR(context.Background(), "sip:alice@example.com")
	if err != nil || len(bs) != 1 {
		t.Fatalf("gateway bindings of sip:alice@example.com = %v %v, want one", bs, err)
	}
	if !strings.Contains(bs[0].Contact, phone.SIPAddr) || bs[0].Source != phone.SIPAddr {
		t.Errorf("binding = %+v, want baresip's contact and source %s", bs[0], phone.SIPAddr)
	}
	if g := testutil.ToFloat64(b.m.Registrations); g != 1 {
		t.Errorf("cusax_registrations_active = %v, want 1", g)
	}
	// Kamailio's location lookup of the AOR now leads to the gateway
	// (which answers OPTIONS itself, with its Server header).
	res := optionsVia(t, k.Addr, "sip:alice@example.com")
	if res.StatusCode != 200 || res.GetHeader("Server") == nil || res.GetHeader("Server").Value() != "cusax-gw" {
		t.Errorf("OPTIONS to the AOR via Kamailio = %d (Server %v), want 200 from cusax-gw", res.StatusCode, res.GetHeader("Server"))
	}
}

// TestIntegrationSIPpRegistersThroughGateway runs testdata/sipp/register.xml
// (REGISTER then un-REGISTER) through the gateway to Kamailio.
func TestIntegrationSIPpRegistersThroughGateway(t *testing.T) {
	testenv.Require(t)
	k := testenv.StartKamailioOptions(t, testenv.KamailioOptions{Domains: []string{"example.com"}})
	b, gw := startGatewayTo(t, k.Addr)
	scenario, err := filepath.Abs("testdata/sipp/register.xml")
	if err != nil {
		t.Fatal(err)
	}
	res := testenv.RunSIPp(t, 30*time.Second, "-sf", scenario, "-s", "bob", "-m", "5", "-l", "1", gw)
	if res.ExitCode != testenv.SIPpOK {
		t.Fatalf("sipp exit %d:\n%s", res.ExitCode, res.Output)
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 0 {
		t.Errorf("bindings after the un-REGISTERs = %d, want 0", n)
	}
	if got := testutil.ToFloat64(b.m.Requests.WithLabelValues("REGISTER", "out")); got != 10 {
		t.Errorf(`cusax_sip_requests_total{REGISTER,out} = %v, want 10`, got)
	}
	if res := optionsVia(t, k.Addr, "sip:bob@example.com"); res.StatusCode != 404 {
		t.Errorf("OPTIONS to bob after un-REGISTER = %d, want 404", res.StatusCode)
	}
}
