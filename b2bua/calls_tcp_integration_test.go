package b2bua

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// TestIntegrationSIPpPhoneOverTCP runs SIPp phones over TCP (-t t1: one
// connection, which SIPp also reads incoming requests from) through the
// gateway's tcp listener to the SIPp PBX stand-in on UDP: a call hung up
// by the phone, one hung up by the PBX (the BYE must reach the phone over
// its connection), and a registration followed at once by a call from the
// PBX. The SIPp build on these machines has no TLS (no -t l1); TLS and
// WebSocket phones are covered by TestCallsOverConnectionListeners.
func TestIntegrationSIPpPhoneOverTCP(t *testing.T) {
	testenv.Require(t)
	withTCP := func(c *Config) { c.Listen = append(c.Listen, Listener{"tcp", "127.0.0.1:0"}) }
	tcpRig := func(t *testing.T) *callRig {
		r := startCallRig(t, withTCP)
		r.gw = listenerAddr(t, r.b, "tcp") // runPhone's target
		return r
	}
	// SIPp over TCP also listens on its local port (default 5060, which
	// parallel runs would share: "Unable to listen main socket").
	phoneTCP := func(t *testing.T, args ...string) []string {
		return append(args, "-t", "t1", "-p", strconv.Itoa(testenv.FreePort(t)))
	}

	for _, tc := range []struct{ name, uac, uas string }{
		{"ByeFromPhone", "impp.uac.xml", "answer.uas.xml"},
		{"ByeFromPBX", "pbxbye.uac.xml", "pbxbye.uas.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tcpRig(t)
			r.call(t, tc.uac, tc.uas, phoneTCP(t, "-s", "bob", "-m", "1"), []string{"-m", "1"})
			r.waitIdle(t, 1)
			if got := r.calls("phone", resultAnswered); got != 1 {
				t.Errorf("cusax_calls_total{phone,answered} = %v, want 1", got)
			}
		})
	}

	t.Run("RegisterThenCallFromPBX", func(t *testing.T) {
		t.Parallel()
		r := tcpRig(t)
		p := startPBX(t, r.pbxPort, "register-call.pbx.xml", "-m", "1")
		res := r.runPhone(t, "register-call.phone.xml", phoneTCP(t, "-m", "1",
			"-oocsf", callScenario(t, "register-call.answer.xml"))...)
		pbxExit := p.wait(20 * time.Second)
		if res.ExitCode != testenv.SIPpOK || pbxExit != 0 {
			t.Fatalf("phone sipp exit %d, PBX sipp exit %d, want 0 and 0\nphone:\n%s\nPBX:\n%s",
				res.ExitCode, pbxExit, sippFiles(res.Dir), p.report())
		}
		if l := sippLogs(res.Dir); !strings.Contains(l, "incoming INVITE: INVITE sip:alice@127.0.0.1 impp <xmpp:bob@example.com>;purpose=impp") {
			t.Errorf("phone log = %q, want the call at its own contact, bob stamped", l)
		}
		r.waitIdle(t, 1)
		if got := r.calls("pbx", resultAnswered); got != 1 {
			t.Errorf("cusax_calls_total{pbx,answered} = %v, want 1", got)
		}
		bs, err := r.b.Bindings().ByAOR(context.Background(), "sip:alice@example.com")
		if err != nil || len(bs) != 1 || bs[0].Transport != "TCP" {
			t.Errorf("alice's bindings = %+v (%v), want one over TCP", bs, err)
		}
	})
}
