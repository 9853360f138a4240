package identity_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Vectors computed independently (Python hashlib) over user:realm:password.
func TestNewCredential(t *testing.T) {
	for _, tc := range []struct {
		aor, realm, password string
		user, md5, sha256    string
	}{
		{"sip:alice@example.com", "example.com", "correct horse", "alice",
			"7b528965f9b102b5593b4c5aec86c7da", "f13ac29daec0a9284d3c89cd9d4edc6e17064aeb5452b1e2cdf1c13d9ae7baa0"},
		// RFC 7616 section 3.9.1's user, realm and password.
		{"sip:Mufasa@example.org", "http-auth@example.org", "Circle of Life", "Mufasa",
			"3d78807defe7de2157e2b0b6573a855f", "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"},
		{"sips:+15551230001@example.com", "example.com", "pässwörd", "+15551230001",
			"edd90c5c475edd4f99d3e98434dd8689", "2f1299c63f6e191f3d6b9c1d5dc28ff3be1951e43349bcc00e084de84d7bd9a7"},
	} {
		c, err := identity.NewCredential(tc.aor, tc.realm, tc.password)
		if err != nil {
			t.Fatalf("NewCredential(%s) = %v", tc.aor, err)
		}
		if c.Username != tc.user || c.Realm != tc.realm || c.HA1MD5 != tc.md5 || c.HA1SHA256 != tc.sha256 {
			t.Errorf("NewCredential(%s) = %s %s %s %s, want %s %s %s %s", tc.aor, c.Username, c.Realm, c.HA1MD5, c.HA1SHA256,
				tc.user, tc.realm, tc.md5, tc.sha256)
		}
		for alg, want := range map[string]string{"": tc.md5, "md5": tc.md5, "MD5": tc.md5, "SHA-256": tc.sha256, "sha-256": tc.sha256} {
			if got, ok := c.HA1(alg); !ok || got != want {
				t.Errorf("HA1(%q) = %s, %v, want %s", alg, got, ok, want)
			}
		}
		if _, ok := c.HA1("SHA-512-256"); ok {
			t.Errorf("HA1(SHA-512-256) = ok, want not stored")
		}
	}
}

func TestNewCredentialInvalid(t *testing.T) {
	const secret = "s3cr3t-do-not-print"
	for _, tc := range []struct {
		aor, realm, password, field string
	}{
		{"sip:example.com", "example.com", secret, "sip"},
		{"alice@example.com", "example.com", secret, "sip"},
		{"sip:alice@example.com", "", secret, "realm"},
		{"sip:alice@example.com", `ex"ample`, secret, "realm"},
		{"sip:alice@example.com", "example.com", "", "password"},
		{"sip:alice@example.com", "example.com", secret + "\n", "password"},
		{"sip:alice@example.com", "example.com", "\xff" + secret, "password"},
		{"sip:alice@example.com", "example.com", strings.Repeat("x", identity.MaxPasswordLen+1), "password"},
	} {
		_, err := identity.NewCredential(tc.aor, tc.realm, tc.password)
		var fe *identity.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("NewCredential(%q, %q, …) = %v, want a FieldError on %s", tc.aor, tc.realm, err, tc.field)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "xxxxxxxx") {
			t.Errorf("NewCredential error %q quotes the password", err)
		}
	}
}

// A credential printed by fmt or slog shows no hash.
func TestCredentialRedacted(t *testing.T) {
	c, err := identity.NewCredential("sip:alice@example.com", "example.com", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	c.JID = "alice@example.com"
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "cred", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "cred", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), buf.String()} {
		if strings.Contains(s, c.HA1MD5) || strings.Contains(s, c.HA1SHA256) {
			t.Errorf("printed credential carries a hash: %s", s)
		}
		if !strings.Contains(s, "REDACTED") || !strings.Contains(s, "alice") {
			t.Errorf("printed credential = %s, want the user and REDACTED", s)
		}
	}
}
