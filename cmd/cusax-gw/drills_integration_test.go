package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// Failure drills (issue 7) against the real binary: SIGTERM during a call,
// Redis killed and restarted mid-call, the PBX unreachable. The XMPP
// server restarting under a running component is drilled in
// component/sync_integration_test.go (TestIntegrationSyncProsody and
// TestIntegrationSyncEjabberd: stop, change the map, restart, the
// component reconnects and re-syncs).

// callRig is Kamailio (127.0.0.2) + one gateway binary + alice's and
// bob's baresip phones registered through it. XMPP points at a closed
// port: SIP works while XMPP is down.
type callRig struct {
	gw         *gatewayProc
	kam        *testenv.Kamailio
	alice, bob *testenv.Baresip
	ports      gatewayPorts
}

func startCallRig(t *testing.T, identityYAML, drain string) *callRig {
	t.Helper()
	bin := gatewayBinary(t)
	r := &callRig{kam: startPBX(t, "example.com"), ports: newGatewayPorts(t)}
	xs := xmppSide{Domain: "example.com", Component: "cusax.example.com", Secret: "s",
		ComponentAddr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	if identityYAML == "" {
		identityYAML = fmt.Sprintf("{path: %q}", filepath.Join(t.TempDir(), "identity.db"))
	}
	yaml := gatewayYAML(t, r.ports, xs, r.kam.Addr, identityYAML, "")
	if drain != "" {
		yaml = strings.Replace(yaml, "drain: 10s", "drain: "+drain, 1)
	}
	r.gw = startGateway(t, bin, yaml, "t0k", r.ports.Admin)
	for _, args := range [][]string{
		{"add", "-jid", "alice@example.com", "-sip", "sip:alice@example.com", "-tel", aliceTel},
		{"add", "-jid", "bob@example.com", "-sip", "sip:bob@example.com", "-tel", bobTel},
	} {
		if code, out := r.gw.cli(args...); code != 0 {
			t.Fatalf("identity %v = %d %s", args, code, out)
		}
	}
	gwSIP := "127.0.0.1:" + strconv.Itoa(r.ports.SIP)
	r.alice = testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gwSIP, User: "alice", Domain: "example.com"})
	r.bob = testenv.StartBaresip(t, testenv.BaresipOptions{Registrar: gwSIP, User: "bob", Domain: "example.com"})
	for _, p := range []*testenv.Baresip{r.alice, r.bob} {
		if err := p.WaitRegistered(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// call has alice dial bob's number and waits until both are in the call
// with audio flowing.
func (r *callRig) call(t *testing.T) {
	t.Helper()
	if _, err := r.alice.Command("dial", bobTel, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 20*time.Second, "both phones in an established call", func() (bool, string) {
		a, b := callState(r.alice), callState(r.bob)
		return a == "ESTABLISHED" && b == "ESTABLISHED", "alice " + a + ", bob " + b
	})
	r.audioFlows(t, "at the start of the call")
}

// audioFlows waits until each phone received 100 more packets (2 s of
// 20 ms audio) from the other.
func (r *callRig) audioFlows(t *testing.T, when string) {
	t.Helper()
	a0, b0 := rxPackets(t, r.alice), rxPackets(t, r.bob)
	waitCond(t, 20*time.Second, "audio both ways "+when, func() (bool, string) {
		a, b := rxPackets(t, r.alice), rxPackets(t, r.bob)
		return a >= a0+100 && b >= b0+100, fmt.Sprintf("alice rx %d (from %d), bob rx %d (from %d)", a, a0, b, b0)
	})
}

// hangupAndWaitIdle has bob hang up and waits until alice's call ended.
func (r *callRig) hangup(t *testing.T) {
	t.Helper()
	if _, err := r.bob.Command("hangup", "", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 20*time.Second, "alice's call ends", func() (bool, string) {
		s := callState(r.alice)
		return s == "", "alice " + s
	})
}

// TestIntegrationSIGTERMDrainsCall: SIGTERM during a call puts the
// gateway in drain (readiness 503) while the call goes on with audio;
// when bob hangs up the process exits 0 at once, before shutdown.drain.
func TestIntegrationSIGTERMDrainsCall(t *testing.T) {
	testenv.Require(t)
	r := startCallRig(t, "", "30s")
	r.call(t)
	r.gw.signal(syscall.SIGTERM)
	r.gw.waitUntil(10*time.Second, "/readyz 503 while draining", func() bool {
		code, _ := r.gw.get("/readyz")
		return code == 503
	})
	r.audioFlows(t, "during the drain")
	if r.gw.exited() {
		t.Fatalf("gateway exited during the drain with the call up (%v)", r.gw.waitErr)
	}
	if got := r.gw.metric("cusax_calls_active"); got != 2 {
		t.Errorf("cusax_calls_active during the drain = %v, want 2", got)
	}
	start := time.Now()
	r.hangup(t)
	if code := r.gw.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code after the drained call ended = %d, want 0", code)
	}
	t.Logf("gateway exited %v after bob hung up (shutdown.drain 30s)", time.Since(start).Round(time.Millisecond))
	log := r.gw.log()
	if strings.Contains(log, "drain timeout") || !strings.Contains(log, `msg="gateway stopped"`) {
		t.Errorf("want a clean stop without drain timeout; log:\n%s", log)
	}
}

// TestIntegrationSIGTERMDrainTimeout: the call outlives shutdown.drain:
// the gateway hangs it up (both phones see the call end) and exits 0.
func TestIntegrationSIGTERMDrainTimeout(t *testing.T) {
	testenv.Require(t)
	r := startCallRig(t, "", "3s")
	r.call(t)
	r.gw.signal(syscall.SIGTERM)
	if code := r.gw.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code after shutdown.drain = %d, want 0", code)
	}
	if !strings.Contains(r.gw.log(), "drain timeout; ending remaining calls") {
		t.Errorf("no drain timeout in the log:\n%s", r.gw.log())
	}
	waitCond(t, 20*time.Second, "both phones' calls end (the gateway's BYE)", func() (bool, string) {
		a, b := callState(r.alice), callState(r.bob)
		return a == "" && b == "", "alice " + a + ", bob " + b
	})
}

// TestIntegrationSecondSIGTERMExitsAtOnce: a second SIGTERM during the
// drain ends the process at once with status 1.
func TestIntegrationSecondSIGTERMExitsAtOnce(t *testing.T) {
	testenv.Require(t)
	r := startCallRig(t, "", "30s")
	r.call(t)
	r.gw.signal(syscall.SIGTERM)
	r.gw.waitUntil(10*time.Second, "/readyz 503 while draining", func() bool {
		code, _ := r.gw.get("/readyz")
		return code == 503
	})
	if r.gw.exited() {
		t.Fatal("gateway exited on the first SIGTERM with a call up")
	}
	r.gw.signal(syscall.SIGTERM)
	// A bound on a hang: the drain would last 30 s.
	if code := r.gw.wait(5 * time.Second); code != 1 {
		t.Fatalf("exit code after the second SIGTERM = %d, want 1 (-1: still running)", code)
	}
	// The buffered log is written out before the exit: the first signal's
	// line, then the second's, last and whole.
	log := r.gw.log()
	first, second := strings.Index(log, `msg="shutting down"`), strings.Index(log, "second signal")
	if first < 0 || second < first {
		t.Errorf("want the shutdown line, then the second-signal line; log:\n%s", log)
	}
	if lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n"); !strings.Contains(lines[len(lines)-1], `msg="second signal: exiting without drain" signal=terminated`) {
		t.Errorf("last log line = %q, want the second-signal line", lines[len(lines)-1])
	}
}

// TestIntegrationRedisOutageMidCall: Redis dies during a call. The call
// goes on; readiness says degraded; writes fail with a clear error; a new
// call is still stamped from the cached identity map (checked by the
// callee, SIPp, in the INVITE it receives). Redis comes back (empty:
// the rig runs it without persistence) and writes work again without a
// restart of the gateway.
func TestIntegrationRedisOutageMidCall(t *testing.T) {
	testenv.Require(t)
	rds := testenv.StartRedis(t)
	r := startCallRig(t, redisIdentityYAML(rds.URL), "")
	r.call(t)
	stamped0 := r.gw.metric(`cusax_callinfo_total{action="stamped"}`)

	if err := rds.Kill(); err != nil {
		t.Fatal(err)
	}
	r.gw.waitUntil(15*time.Second, "identity degraded in /readyz", func() bool {
		code, body := r.gw.get("/readyz")
		return code == 200 && strings.Contains(body, "degraded")
	})
	r.audioFlows(t, "with Redis down")
	code, out := r.gw.cli("add", "-jid", "carol@example.com", "-tel", "+15551230003")
	if code != 1 || !strings.Contains(out, "503") && !strings.Contains(strings.ToLower(out), "unavailable") {
		t.Errorf("identity add with Redis down = %d %q, want 1 with a clear unavailable error", code, out)
	} else {
		t.Logf("identity add with Redis down: exit %d: %s", code, strings.TrimSpace(out))
	}
	r.hangup(t)
	if got := r.gw.metric("cusax_calls_active"); got != 0 {
		t.Errorf("cusax_calls_active after the hangup with Redis down = %v, want 0", got)
	}

	// A new call from alice while Redis is down, to a callee the PBX
	// reaches without a registration (SIPp on 127.0.0.1): the caller is
	// resolved from the cache and stamped; SIPp checks the header.
	scenario, err := filepath.Abs(filepath.Join("testdata", "sipp", "uas_impp.xml"))
	if err != nil {
		t.Fatal(err)
	}
	uas := testenv.StartSIPpUAS(t, "-sf", scenario, "-m", "1")
	if _, err := r.alice.Command("dial", "sip:carol@"+uas.Addr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 20*time.Second, "alice's call to SIPp established", func() (bool, string) {
		s := callState(r.alice)
		return s == "ESTABLISHED", "alice " + s
	})
	if _, err := r.alice.Command("hangup", "", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if res := uas.Wait(20 * time.Second); res.ExitCode != testenv.SIPpOK {
		t.Errorf("SIPp callee (checks Call-Info impp) exit %d:\n%s", res.ExitCode, res.Output)
	}
	if got := r.gw.metric(`cusax_callinfo_total{action="stamped"}`); got != stamped0+1 {
		t.Errorf(`cusax_callinfo_total{action="stamped"} = %v, want %v (one more, from the cache)`, got, stamped0+1)
	}

	// Redis returns: writes work again, the gateway was never restarted.
	if err := rds.Restart(); err != nil {
		t.Fatal(err)
	}
	took := waitCond(t, 30*time.Second, "writes work again", func() (bool, string) {
		code, out := r.gw.cli("add", "-jid", "carol@example.com", "-tel", "+15551230003")
		return code == 0, fmt.Sprint(code, out)
	})
	t.Logf("writes recovered %v after Redis came back", took)
	r.gw.waitUntil(15*time.Second, "identity up in /readyz", func() bool {
		code, body := r.gw.get("/readyz")
		return code == 200 && !strings.Contains(body, "degraded")
	})
	if code, body := r.gw.get("/api/v1/lookup?uri=tel:%2B15551230003"); code != 200 || !strings.Contains(body, "carol") {
		t.Errorf("lookup of the identity written after recovery = %d %s", code, body)
	}
}

// TestIntegrationPBXUnreachable: the PBX does not answer (nothing listens
// on its port). A phone's REGISTER and INVITE get a final 503 or 408 —
// no hang — and no call is left behind.
func TestIntegrationPBXUnreachable(t *testing.T) {
	testenv.Require(t)
	bin := gatewayBinary(t)
	ports := newGatewayPorts(t)
	xs := xmppSide{Domain: "example.com", Component: "cusax.example.com", Secret: "s",
		ComponentAddr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	deadPBX := "127.0.0.2:" + strconv.Itoa(testenv.FreePort(t))
	gw := startGateway(t, bin, gatewayYAML(t, ports, xs, deadPBX,
		fmt.Sprintf("{path: %q}", filepath.Join(t.TempDir(), "identity.db")), ""), "t0k", ports.Admin)
	gwSIP := "127.0.0.1:" + strconv.Itoa(ports.SIP)
	for _, method := range []string{"REGISTER", "INVITE"} {
		start := time.Now()
		code, line := sipRequest(t, gwSIP, method, 40*time.Second)
		took := time.Since(start)
		t.Logf("%s with the PBX unreachable: %q after %v", method, line, took.Round(time.Millisecond))
		if code != 503 && code != 408 {
			t.Errorf("%s with the PBX unreachable = %q, want 503 or 408", method, line)
		}
	}
	gw.waitUntil(10*time.Second, "no call left", func() bool {
		m := gw.metrics()
		return m["cusax_calls_active"] == 0 && m["cusax_rtp_sessions_active"] == 0
	})
}

// sipRequest sends one out-of-dialog request as a phone over UDP (alice,
// from 127.0.0.1) and returns the final response's code and status line
// (0 and the error after timeout, a bound on a hang).
func sipRequest(t *testing.T, gw, method string, timeout time.Duration) (int, string) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raddr, err := net.ResolveUDPAddr("udp4", gw)
	if err != nil {
		t.Fatal(err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	tag, local := hex.EncodeToString(id[:]), c.LocalAddr().String()
	ruri, to := "sip:example.com", "<sip:alice@example.com>"
	extra := "Expires: 60\r\n"
	if method == "INVITE" {
		ruri, to, extra = "sip:"+bobTel+"@example.com", "<sip:"+bobTel+"@example.com>", ""
	}
	msg := method + " " + ruri + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + tag + ";rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:alice@example.com>;tag=" + tag + "\r\n" +
		"To: " + to + "\r\n" +
		"Call-ID: " + tag + "@drill\r\n" +
		"CSeq: 1 " + method + "\r\n" +
		"Contact: <sip:alice@" + local + ">\r\n" + extra +
		"Content-Length: 0\r\n\r\n"
	if _, err := c.WriteToUDP([]byte(msg), raddr); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, err.Error()
		}
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "SIP/2.0" {
			continue
		}
		code, err := strconv.Atoi(f[1])
		if err != nil || code < 200 {
			continue
		}
		if method == "INVITE" {
			// ACK the final response (same branch: a non-2xx ACK).
			ack := "ACK " + ruri + " SIP/2.0\r\n" +
				"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + tag + ";rport\r\n" +
				"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=" + tag + "\r\n" +
				"To: " + to + "\r\nCall-ID: " + tag + "@drill\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
			_, _ = c.WriteToUDP([]byte(ack), raddr)
		}
		return code, line
	}
}
