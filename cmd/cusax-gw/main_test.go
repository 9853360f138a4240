package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/internal/config"
)

func TestCLIExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("log:\n  level: info\n  colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte("rtp:\n  port_min: 30001\n  port_max: 30000\nlog:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{nil, exitUsage, "", "usage: cusax-gw"},
		{[]string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{[]string{"version"}, exitOK, "cusax-gw dev", ""},
		{[]string{"help"}, exitOK, "usage:", ""},
		{[]string{"check", "-offline", "-config", "../../config.example.yaml"}, exitOK, "PASS  config", ""},
		{[]string{"check", "-offline", "-config", bad}, exitUsage, "", bad + `:3: log.colour: unknown key`},
		{[]string{"check", "-offline", "-config", invalid}, exitUsage, "", invalid + ":2: rtp.port_min: must be even and < port_max, got 30001..30000\n" + invalid + `:5: log.level: must be one of`},
		{[]string{"check", "-offline", "-config", filepath.Join(dir, "missing.yaml")}, exitUsage, "", "missing.yaml: cannot read configuration: no such file or directory"},
		{[]string{"check", "-offline", "-nope"}, exitUsage, "", "flag provided but not defined: -nope"},
		{[]string{"check", "-offline", "-config", bad, "extra"}, exitUsage, "", `unexpected argument "extra"`},
		{[]string{"run", "-config", bad}, exitUsage, "", "log.colour: unknown key"},
		{[]string{"run", "-h"}, exitOK, "", "-config file"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := cli(context.Background(), tc.args, &out, &errOut, func(string) string { return "" })
			if code != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tc.code, errOut.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("stdout = %q, want it to contain %q", out.String(), tc.out)
			}
			if !strings.Contains(errOut.String(), tc.errOut) {
				t.Errorf("stderr = %q, want it to contain %q", errOut.String(), tc.errOut)
			}
		})
	}
}

// freePort returns a port that was free on 127.0.0.1 for both UDP and TCP.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	closed := freePort(t) // nothing listens there: no XMPP server
	sipPort := freePort(t)
	yaml := fmt.Sprintf(`
admin: {listen: "127.0.0.1:%d", token: "t0k"}
identity: {path: %q}
xmpp: {server: "127.0.0.1:%d", secret: "hunter2"}
sip: {listen: ["udp://127.0.0.1:%d", "tcp://127.0.0.1:%d"], pbx: "sip:127.0.0.1:%d"}
rtp: {listen: 127.0.0.1, port_min: 40000, port_max: 40099}
shutdown: {drain: 1s}
`, freePort(t), filepath.Join(t.TempDir(), "id.db"), closed, sipPort, sipPort, closed)
	cfg, err := config.Load(strings.NewReader(yaml), "test.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestRunWithoutXMPPServer runs the daemon with no XMPP server and no PBX:
// it must start, serve health, metrics and SIP OPTIONS, report the
// component down, and stop cleanly when its context ends.
func TestRunWithoutXMPPServer(t *testing.T) {
	cfg := testConfig(t)
	var logBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: &logBuf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, stop := runDaemon(t, cfg, log)
	ctx := context.Background()
	base := "http://" + cfg.Admin.Listen
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"xmpp"`) {
		t.Errorf("/healthz = %d %s, want 200 with an xmpp entry", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s, want 200 (XMPP is not required for readiness)", code, body)
	}
	_, metrics := httpGet(t, base+"/metrics")
	for _, want := range []string{
		`cusax_build_info{goversion="`,
		"cusax_xmpp_component_up 0",
		"go_goroutines ",
		"process_open_fds ",
		"cusax_rtp_ports_capacity 100",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := httpGet(t, base+"/api/v1/identities"); code != http.StatusUnauthorized {
		t.Errorf("/api without token = %d, want 401", code)
	}
	// The SIP side answers OPTIONS (the same probe check uses on the PBX).
	code, reason, err := b2bua.ProbePBX(ctx, "sip:"+strings.TrimPrefix(cfg.SIP.Listen[0], "udp://"), "test")
	if err != nil || code != 200 {
		t.Errorf("OPTIONS to the gateway = %d %s, %v; want 200", code, reason, err)
	}
	code, reason, err = b2bua.ProbePBX(ctx, "sip:"+strings.TrimPrefix(cfg.SIP.Listen[1], "tcp://")+";transport=tcp", "test")
	if err != nil || code != 200 {
		t.Errorf("OPTIONS over TCP to the gateway = %d %s, %v; want 200", code, reason, err)
	}

	if err := stop(); err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
	if _, err := net.Dial("tcp", cfg.Admin.Listen); err == nil {
		t.Error("admin server still listening after run returned")
	}
	if strings.Contains(logBuf.String(), "hunter2") {
		t.Error("the XMPP secret appears in the log")
	}
}
