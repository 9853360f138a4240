package testenv

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestProsodyConfig(t *testing.T) {
	base := ProsodyConfigOptions{
		Dir: "/tmp/p", Domain: "example.com", Component: "cusax.example.com", Secret: `se"cret`,
		C2SPort: 15222, ComponentPort: 15347,
	}
	conf, err := ProsodyConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`interfaces = { "127.0.0.1" }`,
		`c2s_ports = { 15222 }`,
		`component_ports = { 15347 }`,
		`pidfile = "/tmp/p/prosody.pid"`,
		`data_path = "/tmp/p/data"`,
		`Component "cusax.example.com"`,
		`component_secret = "se\"cret"`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("ProsodyConfig lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "privileged_entities") {
		t.Error("ProsodyConfig without Privileged grants privileges")
	}
	priv := base
	priv.Privileged = true
	if conf, _ := ProsodyConfig(priv); !strings.Contains(conf, `[ "cusax.example.com" ]`) && !strings.Contains(conf, `["cusax.example.com"]`) {
		t.Errorf("ProsodyConfig with Privileged lacks the component's privileged_entities entry:\n%s", conf)
	}
	bad := base
	bad.Secret = ""
	if _, err := ProsodyConfig(bad); err == nil {
		t.Error("ProsodyConfig without a secret succeeded")
	}
}

// TestProsodyConfigIsStartProsodys: the file StartProsody runs is exactly
// ProsodyConfig's, which scripts/rig/prosody.sh writes for the demo.
func TestProsodyConfigIsStartProsodys(t *testing.T) {
	x := StartProsody(t, ProsodyOptions{Privileged: true})
	got, err := os.ReadFile(x.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		return n
	}
	want, err := ProsodyConfig(ProsodyConfigOptions{
		Dir: x.Dir, Domain: x.Domain, Component: x.Component, Secret: x.Secret,
		C2SPort: port(x.C2SAddr), ComponentPort: port(x.ComponentAddr), Privileged: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("StartProsody's config differs from ProsodyConfig's:\n--- StartProsody\n%s\n--- ProsodyConfig\n%s", got, want)
	}
}
