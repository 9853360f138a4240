package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/internal/check"
	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

const (
	streamHeader = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='example.com' version='1.0'>"
	featuresNone = streamHeader + "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
	featuresTLS  = streamHeader + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
	featuresReq  = streamHeader + "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
	hostUnknown  = streamHeader + "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
)

// fakeC2S serves one scripted answer to every connection on 127.0.0.1: it
// reads the client's stream header (the XML declaration and the
// <stream:stream> tag), writes answer, and waits for the client to close.
// With tlsConf, the listener speaks TLS first (direct TLS). It stops when
// the test ends.
func fakeC2S(t *testing.T, answer string, tlsConf *tls.Config) string {
	return fakeServer(t, answer, tlsConf, false)
}

// fakeServer is fakeC2S; with hangUp it writes answer as soon as a client
// connects and closes at once, like a server of another protocol.
func fakeServer(t *testing.T, answer string, tlsConf *tls.Config, hangUp bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if hangUp {
					_, _ = io.WriteString(c, answer)
					return
				}
				r := bufio.NewReader(c)
				// The client's stream header ends with the '>' of
				// <stream:stream ...>, after the XML declaration's.
				if _, err := r.ReadString('>'); err != nil {
					return
				}
				if _, err := r.ReadString('>'); err != nil {
					return
				}
				if _, err := io.WriteString(c, answer); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, r)
			})
		}
	})
	return ln.Addr().String()
}

func selfSigned(t *testing.T) *tls.Config {
	server, _ := testenv.SelfSignedTLS(t, "example.com")
	return server
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestProbeC2STLS(t *testing.T) {
	tlsConf := selfSigned(t)
	tests := []struct {
		name    string
		addr    string
		want    c2sTLS
		wantErr string
	}{
		{"plain", fakeC2S(t, featuresNone, nil), c2sPlain, ""},
		{"starttls optional", fakeC2S(t, featuresTLS, nil), c2sStartTLS, ""},
		{"starttls required", fakeC2S(t, featuresReq, nil), c2sStartTLSRequired, ""},
		{"direct tls", fakeC2S(t, featuresNone, tlsConf), c2sDirectTLS, ""},
		{"stream error", fakeC2S(t, hostUnknown, nil), "", "stream error host-unknown"},
		{"not xmpp", fakeServer(t, "HTTP/1.1 400 Bad Request\r\n\r\n", nil, true), "", "no TLS handshake either"},
		{"closed port", closedAddr(t), "", "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := probeC2STLS(ctx, tt.addr, "example.com")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("probeC2STLS = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("probeC2STLS = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestProbeTLSConsistency(t *testing.T) {
	plain := fakeC2S(t, featuresNone, nil)
	optional := fakeC2S(t, featuresTLS, nil)
	required := fakeC2S(t, featuresReq, nil)
	direct := fakeC2S(t, featuresNone, selfSigned(t))
	noTLS := []string{"udp://127.0.0.1:5060", "tcp://127.0.0.1:5060"}
	withTLS := []string{"udp://127.0.0.1:5060", "tls://127.0.0.1:5061"}
	onlyWSS := []string{"wss://127.0.0.1:8443"}
	tests := []struct {
		name string
		sip  []string
		c2s  string
		warn bool   // a warning, not a pass
		want string // in the detail or the warning
	}{
		{"sip cleartext, xmpp requires tls", noTLS, required, true, "sip.listen has no tls:// or wss:// listener"},
		{"sip cleartext, xmpp offers starttls", noTLS, optional, true, "downgrade risk"},
		{"sip cleartext, xmpp direct tls", noTLS, direct, true, "get direct TLS"},
		{"sip tls, xmpp cleartext", withTLS, plain, true, "SIP offers TLS (tls://127.0.0.1:5061)"},
		{"sip wss, xmpp cleartext", onlyWSS, plain, true, "enable TLS on the XMPP server"},
		{"both tls", withTLS, required, false, "SIP also accepts cleartext on udp://127.0.0.1:5060"},
		{"both tls, sip wss only", onlyWSS, direct, false, "SIP (wss://127.0.0.1:8443) and XMPP both offer TLS"},
		{"neither", noTLS, plain, false, "neither SIP nor XMPP offers TLS"},
		{"xmpp unreachable", noTLS, closedAddr(t), true, "cannot compare SIP and XMPP TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.SIP.Listen = tt.sip
			cfg.XMPP.C2S = tt.c2s
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			detail, err := probeTLSConsistency(ctx, cfg, cfg.C2SAddr())
			var w *check.Warning
			switch {
			case tt.warn && !errors.As(err, &w):
				t.Fatalf("probeTLSConsistency = %q, %v; want a *check.Warning", detail, err)
			case tt.warn && !strings.Contains(err.Error(), tt.want):
				t.Errorf("warning %q does not contain %q", err, tt.want)
			case !tt.warn && err != nil:
				t.Fatalf("probeTLSConsistency = %v; want a pass", err)
			case !tt.warn && !strings.Contains(detail, tt.want):
				t.Errorf("detail %q does not contain %q", detail, tt.want)
			}
		})
	}
}

// TestCheckTLSWarningKeepsExitCode runs the tls probe through the check
// machinery as `cusax-gw check` does: the warning is printed, and the check
// still succeeds.
func TestCheckTLSWarningKeepsExitCode(t *testing.T) {
	cfg := config.Default()
	cfg.SIP.Listen = []string{"udp://127.0.0.1:5060"}
	cfg.XMPP.C2S = fakeC2S(t, featuresReq, nil)
	var tlsProbe []check.Probe
	for _, p := range probes(cfg) {
		if p.Name == "tls" {
			tlsProbe = append(tlsProbe, p)
		}
	}
	if len(tlsProbe) != 1 {
		t.Fatalf("probes(cfg) has %d tls probes, want 1", len(tlsProbe))
	}
	var out strings.Builder
	if !check.Print(&out, check.Run(context.Background(), tlsProbe, probeTimeout)) {
		t.Errorf("check.Print reported failure for a TLS mismatch; want a warning only:\n%s", out.String())
	}
	if !strings.HasPrefix(out.String(), "WARN  tls  downgrade risk") {
		t.Errorf("check output = %q, want a WARN tls line", out.String())
	}

	cfg.XMPP.C2S = "off"
	for _, p := range probes(cfg) {
		if p.Name == "tls" {
			t.Error("probes(cfg) has a tls probe with xmpp.c2s: off")
		}
	}
}

func TestC2SAddr(t *testing.T) {
	for _, tt := range []struct{ server, c2s, want string }{
		{"127.0.0.1:5347", "", "127.0.0.1:5222"},
		{"xmpp.example.com:5347", "", "xmpp.example.com:5222"},
		{"[::1]:5347", "", "[::1]:5222"},
		{"127.0.0.1:5347", "10.0.0.1:5223", "10.0.0.1:5223"},
		{"127.0.0.1:5347", "off", ""},
	} {
		cfg := config.Default()
		cfg.XMPP.Server, cfg.XMPP.C2S = tt.server, tt.c2s
		if got := cfg.C2SAddr(); got != tt.want {
			t.Errorf("C2SAddr() with server %q, c2s %q = %q, want %q", tt.server, tt.c2s, got, tt.want)
		}
	}
}

// TestProbeC2STLSProsody reads a real Prosody's stream features. The rig's
// Prosody has no certificate and allows cleartext: no TLS, and so a
// downgrade warning only when SIP has TLS.
func TestProbeC2STLSProsody(t *testing.T) {
	x := testenv.StartProsody(t, testenv.ProsodyOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := probeC2STLS(ctx, x.C2SAddr, x.Domain); err != nil || got != c2sPlain {
		t.Errorf("probeC2STLS(Prosody) = %q, %v; want %q", got, err, c2sPlain)
	}
	// The wrong domain: Prosody answers with a stream error.
	if got, err := probeC2STLS(ctx, x.C2SAddr, "unknown.example"); err == nil || !strings.Contains(err.Error(), "host-unknown") {
		t.Errorf("probeC2STLS(Prosody, unknown domain) = %q, %v; want a host-unknown stream error", got, err)
	}
}
