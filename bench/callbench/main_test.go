//go:build linux

package main

import (
	"bytes"
	"cmp"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var lastLine = regexp.MustCompile(`^gateway_max_cps=[0-9]+ kamailio_rtpengine_max_cps=[0-9]+ sipp_direct_max_cps=[0-9]+$`)

// TestQuick runs the harness in -quick mode against all three systems
// (50 calls/s for 2 s each) and checks the report's shape, that every call
// succeeded, and that the gateway and rtpengine anchored the media: the
// callee's INVITEs carry their addresses in SDP. No figure is asserted.
func TestQuick(t *testing.T) {
	testenv.Require(t)
	if testing.Short() {
		t.Skip("starts the gateway, Kamailio, rtpengine and SIPp for a few seconds")
	}
	work := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"-quick", "-keep", "-trace", "-workdir", work}, &out, &errOut); err != nil {
		t.Fatalf("callbench -quick: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; !lastLine.MatchString(last) {
		t.Errorf("last line = %q, want %s\n%s", last, lastLine, &out)
	}
	for _, sys := range []string{sysDirect, sysGateway, sysKamailio} {
		var rows []string
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 10 && f[0] == "1" && f[1] == "50" && f[2] == sys {
				rows = append(rows, l)
			}
		}
		if len(rows) != 1 {
			t.Errorf("%d result rows for %s, want 1\n%s", len(rows), sys, &out)
			continue
		}
		if f := strings.Fields(rows[0]); f[3] != "100" || f[4] != "100" || f[5] != "0" || f[10] != "ok" {
			t.Errorf("%s: attempted/succeeded/failed/pass = %s/%s/%s/%s, want 100/100/0/ok\n%s", sys, f[3], f[4], f[5], f[10], &out)
		}
	}

	// What the callee received: the caller's media address directly, the
	// relay's (127.0.0.3) through the gateway, rtpengine's (127.0.0.4)
	// through Kamailio.
	for sys, want := range map[string]string{sysDirect: "127.0.0.1", sysGateway: relayIP, sysKamailio: rtpengineIP} {
		logs, _ := filepath.Glob(filepath.Join(work, "callbench-*", sys+"-50-*", "uas-messages.log"))
		if len(logs) != 1 {
			t.Errorf("%s: callee message logs %v, want one", sys, logs)
			continue
		}
		b, err := os.ReadFile(logs[0])
		if err != nil {
			t.Fatal(err)
		}
		invites := strings.Count(string(b), "\nINVITE sip:")
		offers := len(regexp.MustCompile(`\nc=IN IP4 `+regexp.QuoteMeta(want)+`\r?\n`).FindAllIndex(b, -1))
		if invites != 100 || offers != 100 {
			t.Errorf("%s: callee saw %d INVITEs, %d offers at %s, want 100 and 100", sys, invites, offers, want)
		}
	}
}

func TestStats(t *testing.T) {
	dir := t.TempDir()
	csv := "StartTime;CurrentTime;OutgoingCall(C);SuccessfulCall(C);FailedCall(C);Retransmissions(C);ResponseTimeRepartition1;ResponseTimeRepartition1_<10;ResponseTimeRepartition1_<20;ResponseTimeRepartition1_<50;ResponseTimeRepartition1_<100;ResponseTimeRepartition1_<200;ResponseTimeRepartition1_<500;ResponseTimeRepartition1_<1000;ResponseTimeRepartition1_>=1000;\n" +
		"2026-11-26\t10:00:00.000000\t1000.000000;2026-11-26\t10:00:01.000000\t1001.000000;100;0;0;0;;0;0;0;0;0;0;0;0;\n" +
		"2026-11-26\t10:00:00.000000\t1000.000000;2026-11-26\t10:00:02.000000\t1002.000000;200;150;0;1;;50;0;0;0;0;0;0;0;\n" +
		"2026-11-26\t10:00:00.000000\t1000.000000;2026-11-26\t10:00:04.000000\t1004.000000;200;198;2;3;;150;40;8;0;0;0;0;2;\n"
	path := filepath.Join(dir, "uac.csv")
	if err := os.WriteFile(path, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := readStats(path)
	if err != nil {
		t.Fatal(err)
	}
	for col, want := range map[string]int{"OutgoingCall(C)": 200, "SuccessfulCall(C)": 198, "FailedCall(C)": 2, "Retransmissions(C)": 3} {
		if got := s.int(col); got != want {
			t.Errorf("int(%s) = %d, want %d", col, got, want)
		}
	}
	if got := s.creationRate(200); got != 100 {
		t.Errorf("creationRate(200) = %v, want 100 (200 calls by t+2s)", got)
	}
	for q, want := range map[float64]float64{0.5: 10, 0.9: 20, 0.99: 50, 1: math.Inf(1)} {
		if got := s.setupQuantile(q); got != want {
			t.Errorf("setupQuantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestPassAndMedian(t *testing.T) {
	r := &result{expected: 10, attempted: 10, succeeded: 10}
	if !r.pass() {
		t.Error("pass() = false for 10/10/0")
	}
	r.failed = 1
	if r.pass() {
		t.Error("pass() = true with a failed call")
	}
	r = &result{expected: 10, attempted: 9, succeeded: 9}
	if r.pass() {
		t.Error("pass() = true with a call not placed")
	}
	if got := median([]float64{3, math.NaN(), 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

// TestGatewayConfig renders the gateway's configuration with and without
// -gateway-memory-limit and loads it as the daemon does.
func TestGatewayConfig(t *testing.T) {
	for _, mib := range []int{0, 350} {
		udpBuf := mib << 12 // 0, or 1.4 MB with the limit
		var b bytes.Buffer
		if err := gatewayConfig.Execute(&b, map[string]any{"LogLevel": "info", "Admin": 1, "XMPP": 2, "SIP": 3,
			"Callee": calleeIP + ":4", "Dir": t.TempDir(), "MemLimit": mib << 20, "UDPBuf": udpBuf}); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(&b, "config.yaml", nil)
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			t.Fatalf("memory limit %d MiB: %v\n%s", mib, err, &b)
		}
		if got := cfg.Runtime.MemoryLimit; got != mib<<20 {
			t.Errorf("runtime.memory_limit = %d, want %d", got, mib<<20)
		}
		if want := cmp.Or(udpBuf, config.Default().SIP.UDPReceiveBuffer); cfg.SIP.UDPReceiveBuffer != want {
			t.Errorf("sip.udp_receive_buffer = %d, want %d", cfg.SIP.UDPReceiveBuffer, want)
		}
	}
}
