package api

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
)

// newCredAPI serves the identity and credential routes; it returns the
// directory's store and what the API logged.
func newCredAPI(t *testing.T) (*httptest.Server, identity.Store, *bytes.Buffer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	norm, err := identity.NewNormalizer("US")
	if err != nil {
		t.Fatal(err)
	}
	store := identity.NewMemoryStore()
	dir := identity.NewDirectory(store, norm, "memory", log, identity.NewMetrics(reg), identity.DirectoryOptions{})
	srv := admin.New(admin.Config{Listen: "127.0.0.1:0", Token: token}, reg, reg, log)
	Mount(srv, dir, log)
	MountCredentials(srv, dir, "example.com", log)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, store, &logs
}

func TestCredentialAPI(t *testing.T) {
	ts, store, logs := newCredAPI(t)
	const pw = "s3cret-Pa55"
	const creds = "/api/v1/identities/alice@example.com/credentials"
	for _, step := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", creds, `{"sip":"sip:alice@example.com","password":"` + pw + `"}`, 404, "not found"},
		{"POST", "/api/v1/identities", alice, 201, `"alice@example.com"`},
		{"POST", "/api/v1/identities", `{"jid":"bob@example.com","sip":["sip:bob@example.com"]}`, 201, `"bob@example.com"`},
		{"GET", creds, "", 200, "[]"},
		{"PUT", creds, `{"password":"` + pw + `"}`, 400, `"field": "sip"`},
		{"PUT", creds, `{"sip":"sip:alice@example.com"}`, 400, `"field": "password"`},
		{"PUT", creds, `{"sip":"sip:alice@example.com","password":"a\nb"}`, 400, `"field": "password"`},
		{"PUT", creds, `{"sip":"not an aor","password":"` + pw + `"}`, 400, `"field": "sip"`},
		{"PUT", creds, `{"sip":"sip:bob@example.com","password":"` + pw + `"}`, 400, "not an AOR of alice@example.com"},
		{"PUT", creds, `{"sip":"sip:carol@example.com","password":"` + pw + `"}`, 400, `"field": "sip"`},
		{"PUT", creds, `{"sip":"sip:alice@example.com","password":"` + pw + `","realm":"x"}`, 400, `unknown field \"realm\"`},
		{"PUT", creds, `{"sip":"sip:alice@example.com","password":"` + strings.Repeat("x", MaxBody) + `"}`, 413, "body larger than"},
		{"PUT", "/api/v1/identities/Alice@EXAMPLE.com/credentials", `{"sip":"<sip:alice@EXAMPLE.com:5060>","password":"` + pw + `"}`, 204, ""},
		{"GET", creds, "", 200, `"algorithms": [`},
		{"GET", "/api/v1/identities/alice@example.com", "", 200, `"sip:alice@example.com"`},
		{"GET", "/api/v1/identities/nobody@example.com/credentials", "", 404, "not found"},
		{"DELETE", creds, "", 400, `"field": "sip"`},
		{"DELETE", "/api/v1/identities/bob@example.com/credentials?sip=sip:alice@example.com", "", 404, "not found"},
		{"DELETE", creds + "?sip=sip:alice@example.com", "", 204, ""},
		{"DELETE", creds + "?sip=sip:alice@example.com", "", 404, "not found"},
		{"GET", creds, "", 200, "[]"},
	} {
		code, body := call(t, ts, step.method, step.path, step.body)
		if code != step.code || !strings.Contains(body, step.want) {
			t.Errorf("%s %s %.70s = %d %s\nwant %d containing %q", step.method, step.path, step.body, code, body, step.code, step.want)
		}
		if strings.Contains(body, pw) {
			t.Errorf("%s %s answered with the password: %s", step.method, step.path, body)
		}
	}
	// Set again, then the identity loses the AOR: the password goes too.
	if code, body := call(t, ts, "PUT", creds, `{"sip":"sip:alice@example.com","password":"`+pw+`"}`); code != 204 {
		t.Fatalf("PUT = %d %s", code, body)
	}
	c, err := store.Credential(t.Context(), "sip:alice@example.com")
	if err != nil || c.Realm != "example.com" || c.Username != "alice" || c.JID != "alice@example.com" {
		t.Fatalf("stored credential = %v, %v, want alice's in realm example.com", c, err)
	}
	if code, body := call(t, ts, "GET", creds, ""); strings.Contains(body, c.HA1MD5) || strings.Contains(body, c.HA1SHA256) || code != 200 {
		t.Errorf("GET credentials = %d %s: carries a hash", code, body)
	}
	if code, body := call(t, ts, "PUT", "/api/v1/identities/alice@example.com", `{"sip":[]}`); code != 200 {
		t.Fatalf("PUT identity = %d %s", code, body)
	}
	if _, err := store.Credential(t.Context(), "sip:alice@example.com"); err == nil {
		t.Error("credential kept after the identity dropped the AOR")
	}
	if strings.Contains(logs.String(), pw) || strings.Contains(logs.String(), c.HA1MD5) {
		t.Errorf("the log carries a secret:\n%s", logs.String())
	}
}
