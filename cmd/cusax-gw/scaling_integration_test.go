package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// Several instances (issue 7, docs/scaling.md): two gateway binaries
// share one Redis (identities, their change feed, registrations, and on
// Prosody the component lease).

func redisIdentityYAML(url string) string {
	return fmt.Sprintf("{backend: redis, redis: {url: %q}}", url)
}

// bindingToken returns the gateway token of aor's registration, read
// from the shared Redis the way every instance reads it.
func bindingToken(t *testing.T, redisAddr, aor string) string {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := b2bua.NewRedisBindings(client, "cusax:", 0).ByAOR(ctx, aor)
	if err != nil || len(bs) != 1 {
		t.Fatalf("bindings of %s in Redis = %+v, %v; want one", aor, bs, err)
	}
	return bs[0].Token
}

// TestIntegrationTwoGatewaysProsody: on Prosody, exactly one of two
// gateways holds the component (lease in Redis) and the standby takes over
// within 10 s of the holder's kill -9; an identity written through one is
// served by the other within a second; a call from the PBX entering
// gateway 2 reaches a phone registered through gateway 1.
func TestIntegrationTwoGatewaysProsody(t *testing.T) {
	testenv.Require(t)
	bin := gatewayBinary(t)
	rds := testenv.StartRedis(t)
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: storyUsers})
	xs := xmppSide{Domain: x.Domain, Component: x.Component, Secret: x.Secret, ComponentAddr: x.ComponentAddr, C2SAddr: x.C2SAddr}
	kam := startPBX(t, x.Domain)
	p1, p2 := newGatewayPorts(t), newGatewayPorts(t)
	gw1 := startGateway(t, bin, gatewayYAML(t, p1, xs, kam.Addr, redisIdentityYAML(rds.URL), ""), "t0k", p1.Admin)
	gw2 := startGateway(t, bin, gatewayYAML(t, p2, xs, kam.Addr, redisIdentityYAML(rds.URL), ""), "t0k", p2.Admin)
	gws := []*gatewayProc{gw1, gw2}

	// One holder, one standby.
	holder := waitOneHolder(t, gws)
	standby := gws[1-holder]
	m := standby.metrics()
	if m["cusax_xmpp_lease_held"] != 0 || m["cusax_xmpp_component_up"] != 0 {
		t.Errorf("standby: lease_held %v component_up %v, want 0 and 0", m["cusax_xmpp_lease_held"], m["cusax_xmpp_component_up"])
	}
	if code, body := standby.get("/readyz"); code != 200 || !strings.Contains(body, "standby") {
		t.Errorf("standby /readyz = %d %s, want 200 naming the standby", code, body)
	}

	// An identity written through gateway 1 is served by gateway 2 within
	// a second (the Redis change feed into gateway 2's cache).
	start := time.Now()
	if code, out := gw1.cli("add", "-jid", "bob@"+x.Domain, "-sip", "sip:bob@"+x.Domain, "-tel", bobTel); code != 0 {
		t.Fatalf("identity add on gateway 1 = %d %s", code, out)
	}
	written := time.Since(start)
	lat := waitCond(t, 5*time.Second, "gateway 2 serves bob", func() (bool, string) {
		code, body := gw2.get("/api/v1/lookup?uri=tel:%2B15551230002")
		return code == 200 && strings.Contains(body, "bob@"+x.Domain), fmt.Sprint(code, body)
	})
	t.Logf("identity written through gateway 1 (CLI took %v) served by gateway 2 %v later", written, lat)
	if lat > time.Second {
		t.Errorf("gateway 2 served the new identity %v after the write, want within 1s", lat)
	}

	// bob's phone registers through gateway 1; the PBX-side INVITE for
	// its gateway contact enters gateway 2, which finds the binding in
	// Redis and calls the phone's real contact.
	bp := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: fmt.Sprintf("127.0.0.1:%d", p1.SIP), User: "bob", Domain: x.Domain, SIPTrace: true})
	if err := bp.WaitRegistered(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	token := bindingToken(t, rds.Addr, "sip:bob@"+x.Domain)
	// SIPp plays the PBX: from 127.0.0.2 (trusted), its stock uac
	// (INVITE, ACK, BYE) to sip:TOKEN@gateway2.
	res := testenv.RunSIPp(t, 30*time.Second, "-sn", "uac", "-i", "127.0.0.2", "-s", token, "-m", "1", "-d", "500",
		fmt.Sprintf("127.0.0.1:%d", p2.SIP))
	if res.ExitCode != testenv.SIPpOK {
		t.Fatalf("PBX-side call through gateway 2 to %s: sipp exit %d\n%s", token, res.ExitCode, res.Output)
	}
	// SIPp is done once its BYE is answered; the gateway counts the call
	// when its teardown (the BYE toward the phone) has finished.
	gw2.waitUntil(10*time.Second, "gateway 2's call ended", func() bool {
		return gw2.metrics()["cusax_calls_active"] == 0
	})
	if got := gw2.metric(`cusax_calls_total{origin="pbx",result="answered"}`); got != 1 {
		t.Errorf(`gateway 2 cusax_calls_total{origin="pbx",result="answered"} = %v, want 1`, got)
	}
	if got := gw1.metric(`cusax_calls_total{origin="pbx",result="answered"}`); got != 0 {
		t.Errorf(`gateway 1 cusax_calls_total{origin="pbx",result="answered"} = %v, want 0 (the call entered gateway 2)`, got)
	}
	inv := sipTraceInvite(bp.Log())
	if via := headerValues(inv, "via"); !strings.Contains(via, fmt.Sprintf("127.0.0.1:%d", p2.SIP)) {
		t.Errorf("bob's phone got the INVITE via %q, want gateway 2 (127.0.0.1:%d)", via, p2.SIP)
	}

	// kill -9 the holder: the standby holds the component within 10 s.
	killed := gws[holder]
	killed.signal(syscall.SIGKILL)
	if code := killed.wait(10 * time.Second); code != -1 && code != 137 && code != 0 {
		t.Logf("holder exit code after SIGKILL: %d", code)
	}
	took := waitCond(t, 30*time.Second, "the standby takes the component over", func() (bool, string) {
		m := standby.metrics()
		return m["cusax_xmpp_lease_held"] == 1 && m["cusax_xmpp_component_up"] == 1,
			fmt.Sprintf("lease_held %v component_up %v", m["cusax_xmpp_lease_held"], m["cusax_xmpp_component_up"])
	})
	t.Logf("standby took the component over %v after the holder's kill -9", took)
	if took > 10*time.Second {
		t.Errorf("takeover took %v, want within 10s", took)
	}
}

// waitOneHolder waits until exactly one gateway holds the lease and has
// its component up, and returns its index.
func waitOneHolder(t *testing.T, gws []*gatewayProc) int {
	t.Helper()
	holder := -1
	waitCond(t, 20*time.Second, "exactly one gateway holds the component", func() (bool, string) {
		var held, up float64
		var state []string
		holder = -1
		for i, g := range gws {
			m := g.metrics()
			held += m["cusax_xmpp_lease_held"]
			up += m["cusax_xmpp_component_up"]
			if m["cusax_xmpp_lease_held"] == 1 && m["cusax_xmpp_component_up"] == 1 {
				holder = i
			}
			state = append(state, fmt.Sprintf("gw%d held %v up %v", i+1, m["cusax_xmpp_lease_held"], m["cusax_xmpp_component_up"]))
		}
		return held == 1 && up == 1 && holder >= 0, strings.Join(state, ", ")
	})
	return holder
}

// TestIntegrationTwoGatewaysEjabberd: ejabberd balances several
// connections of one component, so with xmpp.lease auto (and
// xmpp.ejabberd_api set) both gateways connect.
func TestIntegrationTwoGatewaysEjabberd(t *testing.T) {
	testenv.Require(t)
	bin := gatewayBinary(t)
	rds := testenv.StartRedis(t)
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{Users: storyUsers})
	xs := xmppSide{Domain: x.Domain, Component: x.Component, Secret: x.Secret, ComponentAddr: x.ComponentAddr,
		C2SAddr: x.C2SAddr, EjabberdAPI: x.APIURL}
	kam := startPBX(t, x.Domain)
	p1, p2 := newGatewayPorts(t), newGatewayPorts(t)
	gw1 := startGateway(t, bin, gatewayYAML(t, p1, xs, kam.Addr, redisIdentityYAML(rds.URL), ""), "t0k", p1.Admin)
	gw2 := startGateway(t, bin, gatewayYAML(t, p2, xs, kam.Addr, redisIdentityYAML(rds.URL), ""), "t0k", p2.Admin)
	for i, g := range []*gatewayProc{gw1, gw2} {
		waitCond(t, 20*time.Second, fmt.Sprintf("gateway %d's component up", i+1), func() (bool, string) {
			m := g.metrics()
			// Without a lease every instance runs the component: held 1,
			// never acquired.
			held, acq := m["cusax_xmpp_lease_held"], m["cusax_xmpp_lease_acquired_total"]
			return m["cusax_xmpp_component_up"] == 1 && held == 1 && acq == 0, fmt.Sprintf("up %v, lease held %v acquired %v", m["cusax_xmpp_component_up"], held, acq)
		})
	}
	// Both serve the map: bob, written through gateway 2, is published
	// to his contacts (whichever instance writes it).
	if code, out := gw2.cli("add", "-jid", "bob@"+x.Domain, "-sip", "sip:bob@"+x.Domain, "-tel", bobTel); code != 0 {
		t.Fatalf("identity add on gateway 2 = %d %s", code, out)
	}
	ac := dialXMPP(t, x.C2SAddr, "alice@"+x.Domain, storyUsers["alice"])
	bc := dialXMPP(t, x.C2SAddr, "bob@"+x.Domain, storyUsers["bob"])
	ac.presence("subscribe", "bob@"+x.Domain)
	bc.presence("subscribed", "alice@"+x.Domain)
	waitCond(t, 30*time.Second, "alice sees bob's reach", func() (bool, string) {
		got, err := ac.reachOf("bob@" + x.Domain)
		return err == nil && len(got) == 2 && got[1] == "tel:"+bobTel, fmt.Sprint(got, err)
	})
}
