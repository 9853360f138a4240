// Package admin is the operator-facing HTTP server of cusax-gw: /healthz,
// /readyz, /metrics (Prometheus text exposition format) and the bearer-token
// protected /api/ tree that other packages mount handlers on.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// States a subsystem reports.
const (
	StateUp       = "up"
	StateDown     = "down"
	StateDegraded = "degraded" // working, with a reduced service (e.g. cached lookups only)
	StateDisabled = "disabled" // not configured
	StateStarting = "starting"
)

// Status is the state of one subsystem as /healthz and /readyz report it.
type Status struct {
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// CheckFunc reports a subsystem's status. It must be cheap, safe for
// concurrent use and must not block: it reads state the subsystem keeps.
type CheckFunc func() Status

type check struct {
	name     string
	fn       CheckFunc
	required bool
}

// Config configures a Server.
type Config struct {
	Listen string // host:port
	Token  string // bearer token for /api/; empty refuses every API request
	// Pprof serves the runtime profiles (net/http/pprof) at /debug/pprof/,
	// behind the same bearer token as /api/.
	Pprof bool
}

// Server is the admin HTTP server. Create it with New, register checks and
// API handlers, then call Listen and Serve. Its methods are safe for
// concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	gatherer prometheus.Gatherer
	draining atomic.Bool

	mu     sync.Mutex
	checks []check
	ln     net.Listener
	srv    *http.Server
}

// New returns a Server that serves metrics from g (and instruments its
// own handler into reg). Nothing is bound until Listen.
func New(cfg Config, g prometheus.Gatherer, reg prometheus.Registerer, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux(), gatherer: g}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg,
		promhttp.HandlerFor(g, promhttp.HandlerOpts{
			ErrorLog:            slogAdapter{log},
			Registry:            reg,
			MaxRequestsInFlight: 4,
			Timeout:             10 * time.Second,
		})))
	s.mux.Handle("/api/", s.requireToken(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "no such API endpoint: "+r.URL.Path)
	})))
	if cfg.Pprof {
		s.mux.Handle("GET /debug/pprof/", s.requireToken(http.HandlerFunc(pprof.Index)))
		s.mux.Handle("GET /debug/pprof/cmdline", s.requireToken(http.HandlerFunc(pprof.Cmdline)))
		s.mux.Handle("GET /debug/pprof/profile", s.requireToken(http.HandlerFunc(pprof.Profile)))
		s.mux.Handle("GET /debug/pprof/symbol", s.requireToken(http.HandlerFunc(pprof.Symbol)))
		s.mux.Handle("GET /debug/pprof/trace", s.requireToken(http.HandlerFunc(pprof.Trace)))
	}
	return s
}

// AddCheck registers a subsystem for /healthz and /readyz. A required
// subsystem that is not up (or degraded) makes /readyz answer 503.
func (s *Server) AddCheck(name string, required bool, fn CheckFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, check{name: name, fn: fn, required: required})
	sort.Slice(s.checks, func(i, j int) bool { return s.checks[i].name < s.checks[j].name })
}

// HandleAPI mounts h at pattern (which must start with "/api/" after an
// optional method) behind the bearer-token check.
func (s *Server) HandleAPI(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.requireToken(h))
}

// SetDraining makes /readyz answer 503 from now on: the first step of a
// graceful shutdown, so that load balancers stop sending new work.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Listen binds the listening socket, so that a bad address fails at
// startup rather than in the background.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slogAdapter{s.log}.std(),
	}
	s.mu.Unlock()
	return nil
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if srv == nil {
		return errors.New("admin: Serve called before Listen")
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, letting in-flight requests finish until ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// Handler returns the server's handler, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

type report struct {
	Status     string            `json:"status"`
	Subsystems map[string]Status `json:"subsystems"`
}

func (s *Server) collect() (report, bool) {
	s.mu.Lock()
	checks := append([]check(nil), s.checks...)
	s.mu.Unlock()
	r := report{Status: "ok", Subsystems: map[string]Status{}}
	ready := true
	for _, c := range checks {
		st := c.fn()
		r.Subsystems[c.name] = st
		if c.required && st.State != StateUp && st.State != StateDegraded {
			ready = false
		}
	}
	return r, ready
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	r, _ := s.collect()
	writeJSON(w, http.StatusOK, r)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	r, ready := s.collect()
	code := http.StatusOK
	switch {
	case s.draining.Load():
		r.Status, code = "draining", http.StatusServiceUnavailable
	case !ready:
		r.Status, code = "not ready", http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

func (s *Server) requireToken(h http.Handler) http.Handler {
	want := []byte(s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || len(want) == 0 || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cusax-gw"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// WriteError writes {"error": msg} with the given status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// WriteJSON writes v as JSON with the given status code.
func WriteJSON(w http.ResponseWriter, code int, v any) { writeJSON(w, code, v) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
