package b2bua

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The SIPp call suite of issue 6 (and the media test of issue 5): SIPp
// phones on 127.0.0.1 call through an in-process gateway, with a real
// rtprelay.Relay anchoring the media, to a SIPp PBX stand-in on 127.0.0.2.
// The gateway trusts 127.0.0.2/32 only, so the PBX is the trusted peer and
// the phones are not. The scenarios are in testdata/sipp/calls: *.uac.xml
// is the phone that calls, *.uas.xml the PBX that answers; the call from
// the PBX to a registered phone is register-call.{pbx,phone,answer}.xml.
//
// Every scenario checks what it receives (SIPp ereg check_it and
// check_it_inverse on headers and bodies, expected response codes); the
// test then checks the gateway's metrics and the relay's statistics.

// pbxIP is where the PBX stand-in runs: a second loopback address, so that
// the gateway's trusted prefix covers the PBX and not the phones.
const pbxIP = "127.0.0.2"

// callRig is a gateway with a media relay in front of a PBX address.
type callRig struct {
	b       *B2BUA
	gw      string // the gateway's UDP address, 127.0.0.1:port
	pbxPort int    // where the PBX stand-in must listen on pbxIP
	media   *recordingMedia
	rm      *rtprelay.Metrics
}

// testResolver maps AORs (sip:user@host, lowercase host) to identities.
type testResolver map[string][2]string // aor -> jid, name

func (r testResolver) Resolve(uri string) (string, string, bool) {
	var u sip.Uri
	if sip.ParseUri(uri, &u) != nil {
		return "", "", false
	}
	id, ok := r[aorOf(u)]
	return id[0], id[1], ok
}

var callResolver = testResolver{
	"sip:alice@example.com": {"alice@example.com", "Alice"},
	"sip:bob@example.com":   {"bob@example.com", "Bob"},
}

// sippCredentials holds digest passwords by AOR, realm example.com.
type sippCredentials map[string]string

func (c sippCredentials) Credential(_ context.Context, aor string) (identity.Credential, error) {
	pw, ok := c[aor]
	if !ok {
		return identity.Credential{}, identity.ErrNotFound
	}
	return identity.NewCredential(aor, "example.com", pw)
}

// recordingMedia is the relay with the last statistics of each call kept:
// the gateway deletes a call's media after its BYEs, so the test reads the
// final counters here.
type recordingMedia struct {
	*rtprelay.Relay
	mu    sync.Mutex
	final []rtprelay.Stats
}

func (m *recordingMedia) Delete(callID string) error {
	if s, err := m.Relay.Query(callID); err == nil {
		m.mu.Lock()
		m.final = append(m.final, s)
		m.mu.Unlock()
	}
	return m.Relay.Delete(callID)
}

func (m *recordingMedia) stats() []rtprelay.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]rtprelay.Stats(nil), m.final...)
}

// startCallRig starts a relay and a gateway (UDP on 127.0.0.1) whose PBX is
// sip:127.0.0.2:PORT on a free port; mod may change the configuration.
func startCallRig(t *testing.T, mod func(*Config)) *callRig {
	t.Helper()
	testenv.Require(t)
	reg := prometheus.NewRegistry()
	r := &callRig{pbxPort: testenv.FreePort(t), rm: rtprelay.NewMetrics(reg)}

	var b *B2BUA // set before the relay runs: its OnTimeout needs it
	first := testenv.FreePortRange(t, 64)
	lo := netip.MustParseAddr("127.0.0.1")
	relay, err := rtprelay.New(rtprelay.Config{
		Listen: lo, Advertise: lo, PortMin: first, PortMax: first + 63,
		Timeout:   20 * time.Second,
		OnTimeout: func(id string) { b.OnMediaTimeout(id) },
	}, slog.New(slog.DiscardHandler), r.rm)
	if err != nil {
		t.Fatal(err)
	}
	r.media = &recordingMedia{Relay: relay}

	cfg := Config{
		Listen:     []Listener{{"udp", "127.0.0.1:0"}},
		Domain:     "example.com",
		PBX:        "sip:" + pbxIP + ":" + strconv.Itoa(r.pbxPort),
		PBXTimeout: 5 * time.Second,
		CallOptions: CallOptions{
			Media:      r.media,
			Resolver:   callResolver,
			Trusted:    []netip.Prefix{netip.MustParsePrefix(pbxIP + "/32")},
			ByeTimeout: 5 * time.Second,
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	r.b = runGateway(t, cfg, reg, func(gw *B2BUA) {
		b = gw
		runUntilEnd(t, "relay", relay.Run)
	})
	r.gw = listenerAddr(t, r.b, "udp")
	return r
}

// waitIdle waits until the gateway has no call left and has counted the
// ended ones (the last BYE's answer may reach the gateway after both SIPp
// instances exited), then checks that the relay holds no session or port.
func (r *callRig) waitIdle(t *testing.T, wantEnded float64) {
	t.Helper()
	ended := func() float64 {
		var n float64
		for _, o := range []string{"phone", "pbx"} {
			for _, res := range []string{resultAnswered, resultRejected, resultCancelled, resultFailed} {
				n += testutil.ToFloat64(r.b.m.Calls.WithLabelValues(o, res))
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.b.ActiveCalls() != 0 || ended() < wantEnded {
		if time.Now().After(deadline) {
			t.Fatalf("gateway: %d calls active, %v ended after 10s; want 0 active, %v ended", r.b.ActiveCalls(), ended(), wantEnded)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if got := ended(); got != wantEnded {
		t.Errorf("cusax_calls_total (all) = %v, want %v", got, wantEnded)
	}
	if g := testutil.ToFloat64(r.b.m.CallsActive); g != 0 {
		t.Errorf("cusax_calls_active = %v, want 0", g)
	}
	if g := testutil.ToFloat64(r.rm.Sessions); g != 0 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 0", g)
	}
	if g := testutil.ToFloat64(r.rm.PortsInUse); g != 0 {
		t.Errorf("cusax_rtp_ports_in_use = %v, want 0", g)
	}
}

func (r *callRig) calls(origin, result string) float64 {
	return testutil.ToFloat64(r.b.m.Calls.WithLabelValues(origin, result))
}

// callScenario returns the absolute path of testdata/sipp/calls/name.
func callScenario(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "sipp", "calls", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// sippDiag is the options every run gets: errors and messages traced into
// its directory, a receive timeout so that no scenario hangs, and a global
// timeout that fails the run.
var sippDiag = []string{"-trace_err", "-trace_msg", "-trace_logs", "-recv_timeout", "10s", "-timeout", "25s", "-timeout_error"}

// runPhone runs a phone-side SIPp scenario against the gateway and waits
// for it to exit.
func (r *callRig) runPhone(t *testing.T, name string, args ...string) testenv.SIPpResult {
	t.Helper()
	all := append([]string{"-sf", callScenario(t, name)}, sippDiag...)
	all = append(all, args...)
	return testenv.RunSIPp(t, 40*time.Second, append(all, r.gw)...)
}

// pbxSIPp is the PBX stand-in: SIPp bound to 127.0.0.2 (-bind_local, so
// that its packets come from the trusted address), started in the
// background. (testenv.StartSIPpUAS waits for a socket on 127.0.0.1.)
type pbxSIPp struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	out  string
}

// startPBX starts SIPp with the scenario on 127.0.0.2:port and waits
// until its SIP socket is bound. It is killed when the test ends if it is
// still running.
func startPBX(t *testing.T, port int, name string, args ...string) *pbxSIPp {
	t.Helper()
	path, err := testenv.SIPpPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	all := []string{"-sf", callScenario(t, name), "-i", pbxIP, "-bind_local", "-p", strconv.Itoa(port),
		"-nostdin", "-mp", strconv.Itoa(testenv.FreePortRange(t, 4))} // no -cp: see testenv.sippArgs
	all = append(all, sippDiag...)
	all = append(all, args...)
	p := &pbxSIPp{dir: dir, done: make(chan struct{}), out: filepath.Join(dir, "sipp.out")}
	out, err := os.Create(p.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p.cmd = exec.Command(path, all...)
	p.cmd.Dir, p.cmd.Stdout, p.cmd.Stderr = dir, out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	want := fmt.Sprintf("0200007F:%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile("/proc/net/udp")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), want) {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("PBX sipp exited before binding %s:%d:\n%s", pbxIP, port, p.report())
		case <-time.After(10 * time.Millisecond): // polling the socket table, bounded
		}
		if time.Now().After(deadline) {
			t.Fatalf("PBX sipp did not bind %s:%d within 10s:\n%s", pbxIP, port, p.report())
		}
	}
}

// wait waits for the PBX stand-in to exit by itself (its -m calls done)
// and returns its exit code, or -1 after killing it at the timeout.
func (p *pbxSIPp) wait(timeout time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		return -1
	}
}

func (p *pbxSIPp) report() string { return sippFiles(p.dir) }

// sippFiles returns the tail of SIPp's output and of its error and
// message traces in dir.
func sippFiles(dir string) string {
	var sb strings.Builder
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if n != "sipp.out" && !strings.HasSuffix(n, "_errors.log") && !strings.HasSuffix(n, "_messages.log") && !strings.HasSuffix(n, "_logs.log") {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, n))
		s := string(b)
		if len(s) > 6000 {
			s = "…" + s[len(s)-6000:]
		}
		fmt.Fprintf(&sb, "--- %s\n%s\n", n, s)
	}
	return sb.String()
}

// sippLogs returns the scenario's <log> lines of a run (-trace_logs).
func sippLogs(dir string) string {
	ents, _ := os.ReadDir(dir)
	var sb strings.Builder
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), "_logs.log") {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			sb.Write(b)
		}
	}
	return sb.String()
}

// call runs one phone scenario against one PBX scenario and fails the test
// unless both exit 0. It returns the phone's result.
func (r *callRig) call(t *testing.T, phone, pbx string, phoneArgs, pbxArgs []string) (testenv.SIPpResult, *pbxSIPp) {
	t.Helper()
	p := startPBX(t, r.pbxPort, pbx, pbxArgs...)
	res := r.runPhone(t, phone, phoneArgs...)
	pbxExit := p.wait(20 * time.Second)
	if res.ExitCode != testenv.SIPpOK || pbxExit != 0 {
		t.Fatalf("phone sipp (%s) exit %d, PBX sipp (%s) exit %d, want 0 and 0\nphone:\n%s\nPBX:\n%s",
			phone, res.ExitCode, pbx, pbxExit, sippFiles(res.Dir), p.report())
	}
	return res, p
}

// TestIntegrationRelayMediaThroughGateway is issue 5's integration test:
// 10 calls through the gateway, each playing g711a.pcap (236 RTP packets)
// from the phone to a PBX that echoes it (-rtp_echo). The relay must count
// exactly 236 packets per call each way, lose none, and hold no session or
// port once the BYEs are done.
func TestIntegrationRelayMediaThroughGateway(t *testing.T) {
	t.Parallel()
	r := startCallRig(t, nil)
	const calls, packets = 10, 236
	n := strconv.Itoa(calls)
	r.call(t, "media.uac.xml", "answer.uas.xml",
		[]string{"-s", "bob", "-m", n, "-l", n, "-r", n},
		[]string{"-m", n, "-rtp_echo"})
	r.waitIdle(t, calls)

	if got := r.calls("phone", resultAnswered); got != calls {
		t.Errorf("cusax_calls_total{phone,answered} = %v, want %d", got, calls)
	}
	final := r.media.stats()
	if len(final) != calls {
		t.Fatalf("relay sessions deleted = %d, want %d", len(final), calls)
	}
	var fromPhone, toPBX, fromPBX, toPhone uint64
	for _, s := range final {
		a, b := s.Legs[0].Streams, s.Legs[1].Streams
		if len(a) != 1 || len(b) != 1 {
			t.Fatalf("call %s: streams %d/%d, want one audio stream per leg", s.CallID, len(a), len(b))
		}
		if a[0].Packets != packets || b[0].SentPackets != packets || b[0].Packets != packets || a[0].SentPackets != packets {
			t.Errorf("call %s: phone->relay %d, relay->PBX %d, PBX->relay %d, relay->phone %d; want %d each",
				s.CallID, a[0].Packets, b[0].SentPackets, b[0].Packets, a[0].SentPackets, packets)
		}
		if a[0].Lost != 0 || b[0].Lost != 0 || a[0].Dropped != 0 || b[0].Dropped != 0 {
			t.Errorf("call %s: lost %d/%d, dropped %d/%d; want none", s.CallID, a[0].Lost, b[0].Lost, a[0].Dropped, b[0].Dropped)
		}
		fromPhone += a[0].Packets
		toPBX += b[0].SentPackets
		fromPBX += b[0].Packets
		toPhone += a[0].SentPackets
	}
	want := uint64(calls * packets)
	if fromPhone != want || toPBX != want || fromPBX != want || toPhone != want {
		t.Errorf("relayed phone->PBX %d/%d, PBX->phone %d/%d (received/sent); want %d each", fromPhone, toPBX, fromPBX, toPhone, want)
	}
	// The metrics count every packet once received (in) and once sent (out).
	for _, dir := range []string{"in", "out"} {
		if got := testutil.ToFloat64(r.rm.Packets.WithLabelValues(dir)); got != float64(2*want) {
			t.Errorf("cusax_rtp_packets_total{direction=%q} = %v, want %d (236 x 10 each way)", dir, got, 2*want)
		}
	}
	if got := testutil.ToFloat64(r.rm.PacketsLost); got != 0 {
		t.Errorf("cusax_rtp_packets_lost_total = %v, want 0", got)
	}
}

// TestIntegrationSIPpCalls runs the call scenarios of issue 6 through the
// gateway, each against its own gateway, relay and PBX stand-in.
func TestIntegrationSIPpCalls(t *testing.T) {
	testenv.Require(t)
	one := []string{"-s", "bob", "-m", "1"}

	// Answered calls: early media, then a BYE from each side.
	for _, tc := range []struct{ name, phone, pbx string }{
		{"EarlyMedia", "early.uac.xml", "early.uas.xml"},
		{"ByeFromPhone", "impp.uac.xml", "answer.uas.xml"},
		{"ByeFromPBX", "pbxbye.uac.xml", "pbxbye.uas.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startCallRig(t, nil)
			r.call(t, tc.phone, tc.pbx, one, []string{"-m", "1"})
			r.waitIdle(t, 1)
			if got := r.calls("phone", resultAnswered); got != 1 {
				t.Errorf("cusax_calls_total{phone,answered} = %v, want 1", got)
			}
		})
	}

	// Cancelled calls, each sending one of every request in sent. In
	// CancelAnswerRace the PBX answers 200 to the INVITE after the
	// CANCEL: the gateway ACKs and BYEs that leg; the phone still gets 487.
	for _, tc := range []struct {
		name, pbx string
		sent      []string
	}{
		{"CancelWhileRinging", "cancel.uas.xml", []string{"CANCEL"}},
		{"CancelAnswerRace", "cancel-race.uas.xml", []string{"CANCEL", "ACK", "BYE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startCallRig(t, nil)
			r.call(t, "cancel.uac.xml", tc.pbx, one, []string{"-m", "1"})
			r.waitIdle(t, 1)
			if got := r.calls("phone", resultCancelled); got != 1 {
				t.Errorf("cusax_calls_total{phone,cancelled} = %v, want 1", got)
			}
			for _, m := range tc.sent {
				if got := testutil.ToFloat64(r.b.m.Requests.WithLabelValues(m, "out")); got != 1 {
					t.Errorf("cusax_sip_requests_total{%s,out} = %v, want 1", m, got)
				}
			}
		})
	}

	t.Run("HoldResume", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, nil)
		r.call(t, "hold.uac.xml", "hold.uas.xml", one, []string{"-m", "1"})
		r.waitIdle(t, 1)
		if got := testutil.ToFloat64(r.b.m.Requests.WithLabelValues("INVITE", "out")); got != 3 {
			t.Errorf("cusax_sip_requests_total{INVITE,out} = %v, want 3 (the call, hold, resume)", got)
		}
	})

	for _, tc := range []struct{ code, reason string }{
		{"486", "Busy Here"}, {"603", "Decline"}, {"404", "Not Found"},
	} {
		t.Run("Reject"+tc.code, func(t *testing.T) {
			t.Parallel()
			r := startCallRig(t, nil)
			res, _ := r.call(t, "reject.uac.xml", "reject.uas.xml",
				append([]string{"-key", "code", tc.code}, one...),
				[]string{"-m", "1", "-key", "code", tc.code, "-key", "reason", tc.reason})
			r.waitIdle(t, 1)
			if !strings.Contains(sippLogs(res.Dir), "final "+tc.code) {
				t.Errorf("phone log = %q, want final %s", sippLogs(res.Dir), tc.code)
			}
			if got := r.calls("phone", resultRejected); got != 1 {
				t.Errorf("cusax_calls_total{phone,rejected} = %v, want 1", got)
			}
		})
	}

	// Passthrough: the PBX challenges, the gateway relays the challenge
	// and the phone's answer. With 407 the PBX checks the
	// Proxy-Authorization's fields; with 401 it verifies the digest
	// (SIPp's verifyauth reads only Authorization).
	for _, pbx := range []string{"auth.uas.xml", "auth401.uas.xml"} {
		t.Run("DigestPassthrough/"+strings.TrimSuffix(pbx, ".uas.xml"), func(t *testing.T) {
			t.Parallel()
			r := startCallRig(t, nil)
			// the digest over the Request-URI, as phones compute it
			phone := append([]string{"-auth_uri", "bob@example.com"}, one...)
			r.call(t, "auth.uac.xml", pbx, phone, []string{"-m", "1"})
			r.waitIdle(t, 2)
			if got := r.calls("phone", resultRejected); got != 1 {
				t.Errorf("cusax_calls_total{phone,rejected} = %v, want 1 (the challenge)", got)
			}
			if got := r.calls("phone", resultAnswered); got != 1 {
				t.Errorf("cusax_calls_total{phone,answered} = %v, want 1", got)
			}
		})
	}

	// Local: the gateway challenges (407, MD5 and SHA-256) and checks the
	// answer against alice's credential; the PBX sees an authenticated,
	// stamped INVITE.
	t.Run("DigestLocal", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, func(c *Config) {
			c.Auth = AuthLocal
			c.Credentials = sippCredentials{"sip:alice@example.com": "secret"}
			// SIPp 3.6 reads only the first challenge and knows only MD5
			c.DigestAlgorithms = []string{"MD5", "SHA-256"}
		})
		phone := append([]string{"-auth_uri", "bob@example.com"}, one...)
		r.call(t, "auth.uac.xml", "local-auth.uas.xml", phone, []string{"-m", "1"})
		r.waitIdle(t, 1)
		if got := r.calls("phone", resultAnswered); got != 1 {
			t.Errorf("cusax_calls_total{phone,answered} = %v, want 1", got)
		}
		for res, want := range map[string]float64{authChallenged: 1, authOK: 1, authFailed: 0} {
			if got := testutil.ToFloat64(r.b.m.Auth.WithLabelValues(res)); got != want {
				t.Errorf("cusax_sip_auth_total{%s} = %v, want %v", res, got, want)
			}
		}
	})

	t.Run("RegisterThenCallFromPBX", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, nil)
		p := startPBX(t, r.pbxPort, "register-call.pbx.xml", "-m", "1")
		res := r.runPhone(t, "register-call.phone.xml", "-m", "1", "-oocsf", callScenario(t, "register-call.answer.xml"))
		pbxExit := p.wait(20 * time.Second)
		if res.ExitCode != testenv.SIPpOK || pbxExit != 0 {
			t.Fatalf("phone sipp exit %d, PBX sipp exit %d, want 0 and 0\nphone:\n%s\nPBX:\n%s",
				res.ExitCode, pbxExit, sippFiles(res.Dir), p.report())
		}
		if l := sippLogs(res.Dir); !strings.Contains(l, "incoming INVITE: INVITE sip:alice@127.0.0.1 impp <xmpp:bob@example.com>;purpose=impp") || strings.Contains(l, "token cx-") {
			t.Errorf("phone log = %q, want the call at its own contact, bob stamped, no gateway token", l)
		}
		r.waitIdle(t, 1)
		if got := r.calls("pbx", resultAnswered); got != 1 {
			t.Errorf("cusax_calls_total{pbx,answered} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(r.b.m.CallInfo.WithLabelValues("stamped")); got != 1 {
			t.Errorf("cusax_callinfo_total{stamped} = %v, want 1 (bob, from the PBX's P-Asserted-Identity)", got)
		}
		if n, _ := r.b.Bindings().Len(context.Background()); n != 1 {
			t.Errorf("bindings = %d, want alice's one", n)
		}
	})

	t.Run("Options", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, nil)
		res := r.runPhone(t, "options.uac.xml", "-m", "1")
		if res.ExitCode != testenv.SIPpOK {
			t.Fatalf("phone sipp exit %d, want 0\n%s", res.ExitCode, sippFiles(res.Dir))
		}
		if got := testutil.ToFloat64(r.b.m.Requests.WithLabelValues("OPTIONS", "out")); got != 0 {
			t.Errorf("cusax_sip_requests_total{OPTIONS,out} = %v, want 0 (answered by the gateway)", got)
		}
	})

	t.Run("SpoofedImppStripped", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, nil)
		r.call(t, "impp.uac.xml", "impp.uas.xml", one, []string{"-m", "1"})
		r.waitIdle(t, 1)
		for action, want := range map[string]float64{"stripped": 1, "stamped": 1, "kept": 0} {
			if got := testutil.ToFloat64(r.b.m.CallInfo.WithLabelValues(action)); got != want {
				t.Errorf("cusax_callinfo_total{%s} = %v, want %v", action, got, want)
			}
		}
	})

	t.Run("UnparseableSDP", func(t *testing.T) {
		t.Parallel()
		r := startCallRig(t, nil)
		res := r.runPhone(t, "badsdp.uac.xml", "-s", "bob", "-m", "1")
		if res.ExitCode != testenv.SIPpOK {
			t.Fatalf("phone sipp exit %d, want 0\n%s", res.ExitCode, sippFiles(res.Dir))
		}
		r.waitIdle(t, 1)
		if got := r.calls("phone", resultFailed); got != 1 {
			t.Errorf("cusax_calls_total{phone,failed} = %v, want 1", got)
		}
		if got := testutil.ToFloat64(r.b.m.Requests.WithLabelValues("INVITE", "out")); got != 0 {
			t.Errorf("cusax_sip_requests_total{INVITE,out} = %v, want 0 (never forwarded)", got)
		}
	})
}
