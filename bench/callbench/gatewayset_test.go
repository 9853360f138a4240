package main

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestGatewaySets(t *testing.T) {
	var s gatewaySets
	for _, v := range []string{"sip.transaction_linger=2s", "runtime.gc_percent=300", "rtp.port_min=2000"} {
		if err := s.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	out, err := s.apply([]byte("sip:\n  domain: example.com\nrtp:\n  port_min: 1024\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		SIP     map[string]any `yaml:"sip"`
		RTP     map[string]any `yaml:"rtp"`
		Runtime map[string]any `yaml:"runtime"`
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if got.SIP["domain"] != "example.com" || got.SIP["transaction_linger"] != "2s" || got.RTP["port_min"] != 2000 || got.Runtime["gc_percent"] != 300 {
		t.Errorf("applied config:\n%s", out)
	}
	for _, bad := range []string{"novalue", "=1", ".a=1", "a.=1", "a..b=1"} {
		if err := s.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	s = gatewaySets{"sip.domain.x=1"}
	if _, err := s.apply([]byte("sip:\n  domain: example.com\n")); err == nil || !strings.Contains(err.Error(), "not a section") {
		t.Errorf("setting below a scalar: %v", err)
	}
}
