package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
)

const token = "t0k"

func newAPI(t *testing.T) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	norm, err := identity.NewNormalizer("US")
	if err != nil {
		t.Fatal(err)
	}
	dir := identity.NewDirectory(identity.NewMemoryStore(), norm, "memory", log, identity.NewMetrics(reg), identity.DirectoryOptions{})
	srv := admin.New(admin.Config{Listen: "127.0.0.1:0", Token: token}, reg, reg, log)
	Mount(srv, dir, log)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func call(t *testing.T, ts *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, ts.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

const alice = `{"jid":"alice@example.com","sip":["sip:alice@example.com"],"tel":["+15551230001"],"name":"Alice"}`

func TestIdentityAPI(t *testing.T) {
	ts := newAPI(t)
	for _, step := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/api/v1/identities", "", 200, "[]"},
		{"POST", "/api/v1/identities", alice, 201, `"jid": "alice@example.com"`},
		{"POST", "/api/v1/identities", alice, 409, "already exists"},
		{"POST", "/api/v1/identities", `{"jid":"bob@example.com","tel":["(555) 123-0001"]}`, 409, "+15551230001 already belongs to alice@example.com"},
		{"POST", "/api/v1/identities", `{"jid":"bob@example.com","tel":["not a number"]}`, 400, `"field": "tel[0]"`},
		{"POST", "/api/v1/identities", `{"jid":"bob@example.com","phone":"1"}`, 400, `unknown field \"phone\"`},
		{"POST", "/api/v1/identities", `{"jid":"bob@example.com"} {}`, 400, "trailing data"},
		{"POST", "/api/v1/identities", `{"jid": 5}`, 400, `field \"jid\"`},
		{"POST", "/api/v1/identities", ``, 400, "empty body"},
		{"POST", "/api/v1/identities", `{"jid":"` + strings.Repeat("a", MaxBody) + `"}`, 413, "body larger than"},
		{"GET", "/api/v1/identities/alice@example.com", "", 200, `"+15551230001"`},
		{"GET", "/api/v1/identities/nobody@example.com", "", 404, "not found"},
		{"GET", "/api/v1/lookup?uri=tel:%2B1-555-123-0001", "", 200, `"alice@example.com"`},
		{"GET", "/api/v1/lookup?uri=sip:alice@EXAMPLE.com", "", 200, `"alice@example.com"`},
		{"GET", "/api/v1/lookup?uri=xmpp:alice@example.com", "", 200, `"Alice"`},
		{"GET", "/api/v1/lookup?uri=5551230001", "", 200, `"alice@example.com"`},
		{"GET", "/api/v1/lookup?uri=tel:%2B15559999999", "", 404, "not found"},
		{"GET", "/api/v1/lookup", "", 400, `"field": "uri"`},
		{"PUT", "/api/v1/identities/alice@example.com", `{"jid":"bob@example.com"}`, 400, "path says"},
		{"PUT", "/api/v1/identities/alice@example.com", `{"tel":["+15551230002"]}`, 200, `"+15551230002"`},
		{"GET", "/api/v1/lookup?uri=%2B15551230001", "", 404, "not found"},
		{"POST", "/api/v1/import", `[{"jid":"bob@example.com"},{"jid":"carol@example.com","sip":["nope"]}]`, 400, `"row": 1`},
		{"GET", "/api/v1/identities/bob@example.com", "", 404, "not found"},
		{"POST", "/api/v1/import", `[{"jid":"bob@example.com"},{"jid":"carol@example.com","tel":["+15551230002"]}]`, 409, "already belongs to alice@example.com"},
		{"GET", "/api/v1/identities/bob@example.com", "", 404, "not found"},
		{"POST", "/api/v1/import", `[{"jid":"bob@example.com"},{"jid":"carol@example.com"}]`, 200, `"imported": 2`},
		{"GET", "/api/v1/identities?limit=2", "", 200, `"bob@example.com"`},
		{"GET", "/api/v1/identities?limit=0", "", 400, "limit"},
		{"DELETE", "/api/v1/identities/alice@example.com", "", 204, ""},
		{"DELETE", "/api/v1/identities/alice@example.com", "", 404, "not found"},
		{"GET", "/api/v1/identities/not%20a%20jid@@", "", 400, `"field": "jid"`},
	} {
		code, body := call(t, ts, step.method, step.path, step.body)
		if code != step.code || !strings.Contains(body, step.want) {
			t.Errorf("%s %s %.60s = %d %s\nwant %d containing %q", step.method, step.path, step.body, code, body, step.code, step.want)
		}
	}
}

func TestListPaging(t *testing.T) {
	ts := newAPI(t)
	var buf bytes.Buffer
	buf.WriteString("[")
	for i := range 25 {
		if i > 0 {
			buf.WriteString(",")
		}
		buf.WriteString(`{"jid":"u` + string(rune('a'+i)) + `@example.com"}`)
	}
	buf.WriteString("]")
	if code, body := call(t, ts, "POST", "/api/v1/import", buf.String()); code != 200 {
		t.Fatalf("import = %d %s", code, body)
	}
	seen := 0
	path := "/api/v1/identities?limit=10"
	for path != "" {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page []map[string]any
		if err := json.NewDecoder(res.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		seen += len(page)
		link := res.Header.Get("Link")
		path = ""
		if i, j := strings.IndexByte(link, '<'), strings.IndexByte(link, '>'); i >= 0 && j > i {
			path = link[i+1 : j]
		}
	}
	if seen != 25 {
		t.Errorf("paging saw %d identities, want 25", seen)
	}
}
