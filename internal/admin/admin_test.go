package admin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestServer(t *testing.T, token string) (*Server, *httptest.Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "cusax_test_gauge", Help: "A test gauge."})
	g.Set(7)
	reg.MustRegister(g)
	s := New(Config{Listen: "127.0.0.1:0", Token: token}, reg, reg, slog.New(slog.DiscardHandler))
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestReadiness(t *testing.T) {
	s, ts := newTestServer(t, "tok")
	var sipUp atomic.Bool
	s.AddCheck("sip", true, func() Status {
		if sipUp.Load() {
			return Status{State: StateUp}
		}
		return Status{State: StateDown, Detail: "listeners not bound"}
	})
	s.AddCheck("xmpp", false, func() Status { return Status{State: StateDown, Detail: "connection refused"} })

	code, body := get(t, ts.URL+"/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "listeners not bound") {
		t.Errorf("/readyz with sip down = %d %s, want 503 naming the reason", code, body)
	}
	sipUp.Store(true)
	code, body = get(t, ts.URL+"/readyz", "")
	if code != http.StatusOK {
		t.Errorf("/readyz with sip up and xmpp down = %d, want 200 (xmpp is not required): %s", code, body)
	}
	var r report
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if r.Subsystems["xmpp"].State != StateDown || r.Subsystems["sip"].State != StateUp {
		t.Errorf("/readyz subsystems = %+v, want sip up, xmpp down", r.Subsystems)
	}
	s.SetDraining()
	if code, body = get(t, ts.URL+"/readyz", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, `"draining"`) {
		t.Errorf("/readyz while draining = %d %s, want 503 draining", code, body)
	}
	if code, _ = get(t, ts.URL+"/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz while draining = %d, want 200", code)
	}
}

func TestAPIToken(t *testing.T) {
	for _, tc := range []struct {
		name, serverToken, clientToken string
		want                           int
	}{
		{"no token sent", "tok", "", http.StatusUnauthorized},
		{"wrong token", "tok", "tok2", http.StatusUnauthorized},
		{"right token", "tok", "tok", http.StatusTeapot},
		{"server has no token", "", "", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ts := newTestServer(t, tc.serverToken)
			s.HandleAPI("GET /api/v1/ping", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusTeapot)
			}))
			if code, body := get(t, ts.URL+"/api/v1/ping", tc.clientToken); code != tc.want {
				t.Errorf("GET /api/v1/ping = %d %s, want %d", code, body, tc.want)
			}
		})
	}
	_, ts := newTestServer(t, "tok")
	if code, _ := get(t, ts.URL+"/api/v1/nothing", ""); code != http.StatusUnauthorized {
		t.Errorf("unknown API path without token = %d, want 401", code)
	}
	if code, _ := get(t, ts.URL+"/api/v1/nothing", "tok"); code != http.StatusNotFound {
		t.Errorf("unknown API path with token = %d, want 404", code)
	}
}

func TestMetrics(t *testing.T) {
	_, ts := newTestServer(t, "")
	code, body := get(t, ts.URL+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, "cusax_test_gauge 7") {
		t.Errorf("/metrics = %d, want 200 with cusax_test_gauge 7:\n%s", code, body)
	}
}

func TestPprof(t *testing.T) {
	_, off := newTestServer(t, "tok")
	if code, _ := get(t, off.URL+"/debug/pprof/", "tok"); code != http.StatusNotFound {
		t.Errorf("pprof off: GET /debug/pprof/ = %d, want 404", code)
	}
	reg := prometheus.NewRegistry()
	s := New(Config{Listen: "127.0.0.1:0", Token: "tok", Pprof: true}, reg, reg, slog.New(slog.DiscardHandler))
	on := httptest.NewServer(s.Handler())
	t.Cleanup(on.Close)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine"} {
		if code, _ := get(t, on.URL+path, ""); code != http.StatusUnauthorized {
			t.Errorf("pprof on, no token: GET %s = %d, want 401", path, code)
		}
	}
	code, body := get(t, on.URL+"/debug/pprof/goroutine?debug=1", "tok")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("pprof on, token: GET goroutine = %d %.80q, want 200 with a goroutine profile", code, body)
	}
}
