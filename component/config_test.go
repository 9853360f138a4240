package component

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{JID: "cusax.example.com", Server: "127.0.0.1:5347", Secret: testSecret, Domain: "example.com"}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(validConfig(), nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, tc := range []struct {
		name      string
		got, want time.Duration
	}{
		{"DialTimeout", c.cfg.DialTimeout, DefaultDialTimeout},
		{"HandshakeTimeout", c.cfg.HandshakeTimeout, DefaultHandshakeTimeout},
		{"MinBackoff", c.cfg.MinBackoff, DefaultMinBackoff},
		{"MaxBackoff", c.cfg.MaxBackoff, DefaultMaxBackoff},
		{"KeepaliveInterval", c.cfg.KeepaliveInterval, DefaultKeepaliveInterval},
		{"AdvertTimeout", c.cfg.AdvertTimeout, DefaultAdvertTimeout},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if c.cfg.Version != DefaultVersion {
		t.Errorf("Version = %q, want %q", c.cfg.Version, DefaultVersion)
	}
	if c.Up() || c.Privileges().Version != 0 {
		t.Error("a new Component is up or has privileges")
	}

	cfg := validConfig()
	cfg.MinBackoff, cfg.Version = 3*time.Second, "9.9"
	c, err = New(cfg, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c.cfg.MinBackoff != 3*time.Second || c.cfg.Version != "9.9" {
		t.Errorf("New overrode set fields: MinBackoff %v, Version %q", c.cfg.MinBackoff, c.cfg.Version)
	}
}

func TestNewInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"empty JID", func(c *Config) { c.JID = "" }, `JID: "": empty`},
		{"JID with localpart", func(c *Config) { c.JID = "gw@example.com" }, `JID: "gw@example.com": must be a bare domain`},
		{"JID with resource", func(c *Config) { c.JID = "cusax.example.com/r" }, `JID: "cusax.example.com/r": must be a bare domain`},
		{"JID equals Domain", func(c *Config) { c.JID = "example.com" }, `JID: "example.com" must differ from Domain`},
		{"bad Domain", func(c *Config) { c.Domain = "a b" }, `Domain: "a b": `},
		{"Server without port", func(c *Config) { c.Server = "localhost" }, `Server: "localhost": `},
		{"Server without host", func(c *Config) { c.Server = ":5347" }, `Server: ":5347": missing host`},
		{"Server port 0", func(c *Config) { c.Server = "localhost:0" }, `Server: "localhost:0": bad port "0"`},
		{"Server port name", func(c *Config) { c.Server = "localhost:xmpp" }, `bad port "xmpp"`},
		{"empty Secret", func(c *Config) { c.Secret = "" }, `Secret: empty`},
		{"negative timeout", func(c *Config) { c.DialTimeout = -time.Second }, `DialTimeout: must be positive, got -1s`},
		{"negative keepalive", func(c *Config) { c.KeepaliveInterval = -1 }, `KeepaliveInterval: must be positive`},
		{"MinBackoff above MaxBackoff", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, `MinBackoff: 1m0s exceeds MaxBackoff 1s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.edit(&cfg)
			_, err := New(cfg, nil, nil)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New() error = %v, want ErrInvalidConfig containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "component: invalid config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}

	_, err := New(Config{}, nil, nil)
	for _, field := range []string{"JID", "Domain", "Server", "Secret"} {
		if err == nil || !strings.Contains(err.Error(), field+":") {
			t.Errorf("New(Config{}) error = %v, want it to name %s", err, field)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	cfg := validConfig()
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("x", "secret", cfg.Secret, "cfg", cfg)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("x", "secret", cfg.Secret, "cfg", cfg)
	marshalled, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v":        fmt.Sprintf("%v", cfg),
		"%+v":       fmt.Sprintf("%+v", cfg),
		"%#v":       fmt.Sprintf("%#v", cfg),
		"%s":        fmt.Sprintf("%s", cfg.Secret), //lint:ignore S1025 the %s verb is what is tested
		"%q":        fmt.Sprintf("%q", cfg.Secret),
		"%x":        fmt.Sprintf("%x", cfg.Secret),
		"slog text": text.String(),
		"slog json": js.String(),
		"json":      string(marshalled),
	} {
		if strings.Contains(out, testSecret) || strings.Contains(out, fmt.Sprintf("%x", testSecret)) {
			t.Errorf("%s reveals the secret: %s", name, out)
		}
		if name != "%x" && !strings.Contains(out, "REDACTED") {
			t.Errorf("%s = %s, want REDACTED in it", name, out)
		}
	}
}
