package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
	"github.com/cusax-gw/cusax-gw/rtprelay"
)

// TestCheckAgainstRealServers runs `cusax-gw check` against a real Prosody
// (privileged component), a real Redis and Kamailio as the PBX: every probe
// must pass. Then, with the daemon running, check still passes (it
// recognises the daemon's sockets and component), and with the servers
// gone it fails naming them.
func TestCheckAgainstRealServers(t *testing.T) {
	testenv.Require(t)
	pros := testenv.StartProsody(t, testenv.ProsodyOptions{Domain: "example.com", Component: "cusax.example.com", Privileged: true})
	redis := testenv.StartRedis(t)
	kam := testenv.StartKamailio(t)
	sip, admin, rtp := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePortRange(t, 20)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(pros.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`log: {format: text}
admin: {listen: "127.0.0.1:%d", token: t0k}
identity: {backend: redis, redis: {url: %q}}
xmpp: {component: %s, server: %q, secret_file: secret, domain: %s}
sip: {listen: ["udp://127.0.0.1:%d", "tcp://127.0.0.1:%d"], pbx: "sip:%s"}
rtp: {listen: 127.0.0.1, port_min: %d, port_max: %d}
shutdown: {drain: 1s}
`, admin, redis.URL, pros.Component, pros.ComponentAddr, pros.Domain, sip, sip, kam.Addr, rtp, rtp+19)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func() (int, string) {
		var out, errOut bytes.Buffer
		code := cli(context.Background(), []string{"check", "-config", cfgPath}, &out, &errOut, func(string) string { return "" })
		return code, out.String() + errOut.String()
	}
	code, out := check()
	if code != 0 {
		t.Fatalf("check against running servers = %d, want 0:\n%s", code, out)
	}
	for _, want := range []string{
		"PASS  xmpp        handshake with " + pros.ComponentAddr + " as cusax.example.com ok; XEP-0356 urn:xmpp:privilege:2: roster=get",
		"PASS  redis       PING answered",
		"PASS  pbx         sip:" + kam.Addr + " answered OPTIONS with 200",
		"PASS  rtp-ports   all 20 UDP ports",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, pros.Secret) {
		t.Error("check printed the component secret")
	}

	// The daemon running beside check: still all PASS.
	cfg, ok := loadConfig(cfgPath, &bytes.Buffer{}, func(string) string { return "" })
	if !ok {
		t.Fatal("config")
	}
	startDaemon(t, cfg)
	if code, out := check(); code != 0 || !strings.Contains(out, "by the running cusax-gw") {
		t.Errorf("check beside the running daemon = %d, want 0:\n%s", code, out)
	}
}

func TestCheckFailsNamingPeers(t *testing.T) {
	dir := t.TempDir()
	closed := freePort(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`admin: {listen: "127.0.0.1:%d"}
identity: {backend: redis, redis: {url: "redis://127.0.0.1:%d/0"}}
xmpp: {server: "127.0.0.1:%d", secret: s}
sip: {listen: ["udp://127.0.0.1:%d"], pbx: "sip:127.0.0.1:%d;transport=tcp"}
rtp: {listen: 127.0.0.1, port_min: 40100, port_max: 40109}
`, freePort(t), closed, closed, freePort(t), closed)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := cli(context.Background(), []string{"check", "-config", cfgPath}, &out, &out, func(string) string { return "" })
	if code != 1 {
		t.Errorf("check with nothing listening = %d, want 1:\n%s", code, out.String())
	}
	for _, want := range []string{
		fmt.Sprintf("FAIL  xmpp        xmpp.server 127.0.0.1:%d unreachable: connect: connection refused", closed),
		"FAIL  redis       redis PING failed",
		"FAIL  pbx ",
		"PASS  admin",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestRtpengineBackend: with rtp.backend rtpengine, check pings the real
// rtpengine instead of probing the port range, and the daemon runs and
// stops cleanly with it.
func TestRtpengineBackend(t *testing.T) {
	testenv.Require(t)
	rtpe := testenv.StartRtpengine(t)
	cfg := testConfig(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	yaml := fmt.Sprintf(`admin: {listen: %q}
identity: {path: %q}
xmpp: {server: %q, secret: s}
sip: {listen: [%q], pbx: %q}
rtp: {backend: rtpengine, rtpengine: {ng: %q}}
`, cfg.Admin.Listen, filepath.Join(dir, "id.db"), cfg.XMPP.Server, cfg.SIP.Listen[0], cfg.SIP.PBX, rtpe.NGAddr)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cli(context.Background(), []string{"check", "-config", cfgPath}, &out, &out, func(string) string { return "" })
	if want := "PASS  rtpengine   rtpengine at " + rtpe.NGAddr + " answered ping"; !strings.Contains(out.String(), want) {
		t.Errorf("check output lacks %q:\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "rtp-ports") {
		t.Errorf("check probed the port range although rtpengine owns media:\n%s", out.String())
	}
	c, ok := loadConfig(cfgPath, &out, func(string) string { return "" })
	if !ok {
		t.Fatal(out.String())
	}
	d := startDaemon(t, c)
	if _, ok := d.media.(*rtprelay.Rtpengine); !ok {
		t.Errorf("media backend = %T, want *rtprelay.Rtpengine", d.media)
	}
}
