package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// The CUSAX story end to end (issue 7), against the real binary: alice and
// bob are provisioned through the CLI; their baresip phones register
// through the gateway to Kamailio (the PBX, on 127.0.0.2, the one trusted
// peer; its number table maps +15551230002 to bob); alice dials bob's
// number; bob's phone rings with Call-Info: <xmpp:alice@…>;purpose=impp
// (seen in bob's own SIP trace); audio flows both ways through the relay;
// bob hangs up; meanwhile bob's XMPP client sees alice's reach addresses
// and the number in her vCard.

// xmppSide describes the XMPP server of a story run.
type xmppSide struct {
	Domain, Component, Secret, ComponentAddr, C2SAddr string
	EjabberdAPI                                       string
}

var storyUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

const (
	aliceTel = "+15551230001"
	bobTel   = "+15551230002"
)

func TestIntegrationStoryProsody(t *testing.T) {
	testenv.Require(t)
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: storyUsers})
	runStory(t, xmppSide{Domain: x.Domain, Component: x.Component, Secret: x.Secret,
		ComponentAddr: x.ComponentAddr, C2SAddr: x.C2SAddr})
}

func TestIntegrationStoryEjabberd(t *testing.T) {
	testenv.Require(t)
	x := testenv.StartEjabberd(t, testenv.EjabberdOptions{Users: storyUsers})
	runStory(t, xmppSide{Domain: x.Domain, Component: x.Component, Secret: x.Secret,
		ComponentAddr: x.ComponentAddr, C2SAddr: x.C2SAddr, EjabberdAPI: x.APIURL})
}

// startPBX starts Kamailio on 127.0.0.2 serving domain, with the story's
// numbers routed to their users.
func startPBX(t *testing.T, domain string) *testenv.Kamailio {
	t.Helper()
	return testenv.StartKamailioOptions(t, testenv.KamailioOptions{
		Host: "127.0.0.2", Domains: []string{domain},
		Numbers: map[string]string{aliceTel: "alice", bobTel: "bob"},
	})
}

// gatewayYAML is the configuration of an end-to-end gateway. identity is
// the identity section's YAML (flow style), xmppExtra extra keys of xmpp.
func gatewayYAML(t *testing.T, p gatewayPorts, x xmppSide, pbx, identity, xmppExtra string) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "xmpp.secret")
	if err := os.WriteFile(secret, []byte(x.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`log: {format: text, level: debug}
admin: {listen: "127.0.0.1:%d", token: t0k}
identity: %s
xmpp: {component: %s, server: %q, secret_file: %q, domain: %s, ejabberd_api: %q%s}
sip: {listen: ["udp://127.0.0.1:%d"], domain: %s, pbx: "sip:%s", trusted: ["127.0.0.2/32"]}
rtp: {listen: 127.0.0.1, port_min: %d, port_max: %d, timeout: 20s}
shutdown: {drain: 10s}
`, p.Admin, identity, x.Component, x.ComponentAddr, secret, x.Domain, x.EjabberdAPI, xmppExtra,
		p.SIP, x.Domain, pbx, p.RTPMin, p.RTPMin+39)
}

func runStory(t *testing.T, x xmppSide) {
	bin := gatewayBinary(t)
	kam := startPBX(t, x.Domain)
	ports := newGatewayPorts(t)
	dbPath := filepath.Join(t.TempDir(), "identity.db")
	gw := startGateway(t, bin, gatewayYAML(t, ports, x, kam.Addr, fmt.Sprintf("{path: %q}", dbPath), ""), "t0k", ports.Admin)
	gwSIP := fmt.Sprintf("127.0.0.1:%d", ports.SIP)
	alice, bob := "alice@"+x.Domain, "bob@"+x.Domain

	// 1. The operator provisions alice and bob with the CLI.
	for _, args := range [][]string{
		{"add", "-jid", alice, "-sip", "sip:alice@" + x.Domain, "-tel", aliceTel, "-name", "Alice"},
		{"add", "-jid", bob, "-sip", "sip:bob@" + x.Domain, "-tel", bobTel, "-name", "Bob"},
	} {
		if code, out := gw.cli(args...); code != 0 {
			t.Fatalf("cusax-gw identity %v = %d\n%s", args, code, out)
		}
	}
	if code, out := gw.cli("get", "tel:"+bobTel); code != 0 || !strings.Contains(out, bob) {
		t.Fatalf("cusax-gw identity get tel:%s = %d %s", bobTel, code, out)
	}

	// 2. bob's XMPP client: subscribed to alice (reach is published with
	// the presence access model), it reads her reach and vCard.
	ac := dialXMPP(t, x.C2SAddr, alice, storyUsers["alice"])
	bc := dialXMPP(t, x.C2SAddr, bob, storyUsers["bob"])
	bc.presence(stanza.SubscribePresence, alice)
	ac.presence(stanza.SubscribedPresence, bob)
	wantReach := []string{"sip:alice@" + x.Domain, "tel:" + aliceTel}
	d := waitCond(t, 60*time.Second, "bob's client sees alice's reach addresses", func() (bool, string) {
		got, err := bc.reachOf(alice)
		if err != nil {
			// Not subscribed yet: alice's "subscribed" can reach her server
			// before bob's "subscribe" did (two sessions), and ejabberd then
			// drops it. The exchange is idempotent: repeat it.
			bc.presence(stanza.SubscribePresence, alice)
			ac.presence(stanza.SubscribedPresence, bob)
		}
		return err == nil && slices.Equal(got, wantReach), fmt.Sprint(got, err)
	})
	t.Logf("bob's client sees alice's reach %v after %v", wantReach, d)
	waitCond(t, 60*time.Second, "bob's client sees alice's number in her vCard", func() (bool, string) {
		got, err := bc.vcardNumbersOf(alice)
		return err == nil && slices.Equal(got, []string{aliceTel}), fmt.Sprint(got, err)
	})

	// 3. Both phones register through the gateway to the PBX.
	ap := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gwSIP, User: "alice", Domain: x.Domain})
	bp := testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gwSIP, User: "bob", Domain: x.Domain, SIPTrace: true})
	for _, p := range []*testenv.Baresip{ap, bp} {
		if err := p.WaitRegistered(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := gw.metric("cusax_registrations_active"); n != 2 {
		t.Errorf("cusax_registrations_active = %v, want 2", n)
	}

	// 4. alice dials bob's number.
	if _, err := ap.Command("dial", bobTel, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 20*time.Second, "both phones in an established call", func() (bool, string) {
		a, b := callState(ap), callState(bp)
		return a == "ESTABLISHED" && b == "ESTABLISHED", "alice " + a + ", bob " + b
	})
	m := gw.metrics()
	if m["cusax_calls_active"] != 2 || m["cusax_rtp_sessions_active"] != 2 {
		t.Errorf("during the call: cusax_calls_active = %v, cusax_rtp_sessions_active = %v; want 2 and 2 (alice→PBX, PBX→bob)",
			m["cusax_calls_active"], m["cusax_rtp_sessions_active"])
	}

	// bob's phone got the INVITE with alice's XMPP address (its own trace).
	invite := sipTraceInvite(bp.Log())
	if invite == "" {
		t.Fatalf("no INVITE in bob's SIP trace:\n%s", bp.Log())
	}
	wantCI := "Call-Info: <xmpp:" + alice + ">;purpose=impp"
	if !strings.Contains(invite, wantCI) {
		t.Errorf("the INVITE bob's phone received lacks %q:\n%s", wantCI, invite)
	}
	t.Logf("bob's phone received: %s; Call-Info: %s", strings.SplitN(invite, "\n", 2)[0], headerValues(invite, "call-info"))
	if strings.Contains(strings.ToLower(headerValues(invite, "contact")), "xmpp:") {
		t.Errorf("the INVITE bob's phone received has an xmpp: Contact:\n%s", invite)
	}
	if got := m[`cusax_callinfo_total{action="stamped"}`]; got != 2 {
		t.Errorf(`cusax_callinfo_total{action="stamped"} = %v, want 2 (alice's call to the PBX and the PBX's call to bob)`, got)
	}

	// 5. Audio both ways: each phone receives the other's packets through
	// the relay, and the relay's counters grow in both directions.
	in0, out0 := m[`cusax_rtp_packets_total{direction="in"}`], m[`cusax_rtp_packets_total{direction="out"}`]
	aRX0, bRX0 := rxPackets(t, ap), rxPackets(t, bp)
	waitCond(t, 20*time.Second, "both phones receive audio", func() (bool, string) {
		a, b := rxPackets(t, ap), rxPackets(t, bp)
		return a >= aRX0+100 && b >= bRX0+100, fmt.Sprintf("alice rx %d (from %d), bob rx %d (from %d)", a, aRX0, b, bRX0)
	})
	m = gw.metrics()
	if in, out := m[`cusax_rtp_packets_total{direction="in"}`], m[`cusax_rtp_packets_total{direction="out"}`]; in < in0+400 || out < out0+400 {
		t.Errorf("relay packets in %v→%v, out %v→%v; want both grown by 4 relayed streams' 100 packets", in0, in, out0, out)
	}

	// 6. bob hangs up; alice's call ends; the gateway is idle again.
	if _, err := bp.Command("hangup", "", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 20*time.Second, "alice's call ends", func() (bool, string) {
		s := callState(ap)
		return s == "", "alice " + s
	})
	waitCond(t, 10*time.Second, "gateway idle", func() (bool, string) {
		m := gw.metrics()
		return m["cusax_calls_active"] == 0 && m["cusax_rtp_sessions_active"] == 0 && m["cusax_rtp_ports_in_use"] == 0,
			fmt.Sprintf("calls %v sessions %v ports %v", m["cusax_calls_active"], m["cusax_rtp_sessions_active"], m["cusax_rtp_ports_in_use"])
	})
	m = gw.metrics()
	for _, origin := range []string{"phone", "pbx"} {
		if got := m[`cusax_calls_total{origin="`+origin+`",result="answered"}`]; got != 1 {
			t.Errorf(`cusax_calls_total{origin=%q,result="answered"} = %v, want 1`, origin, got)
		}
	}

	// Meanwhile bob's client still sees alice as the map says.
	if got, err := bc.reachOf(alice); err != nil || !slices.Equal(got, wantReach) {
		t.Errorf("bob's view of alice's reach after the call = %v %v, want %v", got, err, wantReach)
	}
	if got, err := bc.vcardNumbersOf(alice); err != nil || !slices.Equal(got, []string{aliceTel}) {
		t.Errorf("bob's view of alice's vCard numbers = %v %v, want [%s]", got, err, aliceTel)
	}
}

// callState returns the state baresip's listcalls shows for its first
// call ("ESTABLISHED", "INCOMING", ...), or "" without a call.
func callState(p *testenv.Baresip) string {
	out, err := p.Command("listcalls", "", 2*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, s := range []string{"ESTABLISHED", "EARLY", "RINGING", "INCOMING", "OUTGOING", "TERMINATED"} {
		if strings.Contains(out, s) {
			return s
		}
	}
	if strings.Contains(out, "sip:") {
		return "other: " + strings.TrimSpace(out)
	}
	return ""
}

var rcvdRE = regexp.MustCompile(`psent=\d+ rcvd=(\d+)`)

// rxPackets returns the RTP packets the phone's current call received
// from its peer (baresip's audio_debug: the RTCP member's rcvd count).
func rxPackets(t *testing.T, p *testenv.Baresip) int {
	t.Helper()
	out, err := p.Command("audio_debug", "", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mm := range rcvdRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(mm[1])
		n = max(n, v)
	}
	return n
}

// sipTraceInvite returns the first INVITE request in a baresip SIP trace
// (its -s output), from the request line to the blank line.
func sipTraceInvite(log string) string {
	i := strings.Index(log, "INVITE sip:")
	if i < 0 {
		return ""
	}
	rest := log[i:]
	if j := strings.Index(rest, "\r\n\r\n"); j >= 0 {
		return rest[:j]
	}
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		return rest[:j]
	}
	return rest
}

// headerValues returns every value of header name (case-insensitive) in
// a SIP message, joined by newlines.
func headerValues(msg, name string) string {
	var vs []string
	for _, line := range strings.Split(msg, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return strings.Join(vs, "\n")
}
