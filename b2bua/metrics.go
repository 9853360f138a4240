package b2bua

import (
	"slices"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the b2bua's Prometheus metrics (names fixed by CONTRACT.md).
// Labels come from small fixed sets; never a URI, number or Call-ID.
type Metrics struct {
	Requests      *prometheus.CounterVec // method, direction
	Responses     *prometheus.CounterVec // code_class, direction
	CallsActive   prometheus.Gauge
	Calls         *prometheus.CounterVec // origin, result
	CallInfo      *prometheus.CounterVec // action
	Registrations prometheus.Gauge
	Panics        prometheus.Counter
	Auth          *prometheus.CounterVec // result (sip.auth: local)
	Rejected      *prometheus.CounterVec // reason (admission control)
	PBXUp         prometheus.Gauge
	Absorbed      prometheus.Counter // initial INVITE retransmissions absorbed by the B2BUA

	udpDrops *udpDrops // cusax_sip_udp_receive_drops_total
	hot      hotCounters
}

// NewMetrics creates the b2bua metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_sip_requests_total",
			Help: "SIP requests received (direction=in) and sent (direction=out), by method.",
		}, []string{"method", "direction"}),
		Responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_sip_responses_total",
			Help: "SIP responses received (direction=in) and sent (direction=out), by status class (1xx..6xx).",
		}, []string{"code_class", "direction"}),
		CallsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_calls_active",
			Help: "Calls currently bridged or being set up.",
		}),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_calls_total",
			Help: "Calls ended, by origin (phone|pbx) and result (answered|rejected|cancelled|failed).",
		}, []string{"origin", "result"}),
		CallInfo: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cusax_callinfo_total",
			Help: "Call-Info purpose=impp values stamped, stripped from untrusted sources, or kept from trusted ones.",
		}, []string{"action"}),
		Registrations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_registrations_active",
			Help: "Phone registrations currently bound through this gateway.",
		}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_panics_total",
			Help: "Panics recovered in per-request or per-call goroutines (each also logged).",
		}),
	}
	m.Auth = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cusax_sip_auth_total",
		Help: "Local digest authentication outcomes (sip.auth: local): ok, challenged (no credentials), stale (expired nonce), failed, forbidden (another user's credentials), error (credential store).",
	}, []string{"result"})
	for _, r := range authResults {
		m.Auth.WithLabelValues(r)
	}
	m.Rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cusax_sip_overload_rejected_total",
		Help: "Requests answered 503 by admission control, by reason (max_calls|max_cps|rate_limit).",
	}, []string{"reason"})
	for _, r := range []string{"max_calls", "max_cps", "rate_limit"} {
		m.Rejected.WithLabelValues(r)
	}
	m.PBXUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cusax_sip_pbx_up",
		Help: "1 while sip.pbx answers the gateway's OPTIONS pings, 0 once it stopped answering (phones then get 503).",
	})
	m.PBXUp.Set(1)
	m.Absorbed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cusax_sip_retransmissions_absorbed_total",
		Help: "Retransmissions of a call's initial INVITE that arrived after its transaction ended (sip.accepted_linger) and were absorbed by the gateway.",
	})
	m.udpDrops = &udpDrops{}
	drops := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cusax_sip_udp_receive_drops_total",
		Help: "SIP datagrams the kernel dropped because a UDP listener's receive buffer was full (sip.udp_receive_buffer; Linux).",
	}, m.udpDrops.total)
	reg.MustRegister(m.Rejected, m.PBXUp, m.Absorbed, drops)
	for _, a := range []string{"stamped", "stripped", "kept"} {
		m.CallInfo.WithLabelValues(a)
	}
	for _, o := range []string{"phone", "pbx"} {
		for _, r := range []string{"answered", "rejected", "cancelled", "failed"} {
			m.Calls.WithLabelValues(o, r)
		}
	}
	reg.MustRegister(m.Requests, m.Responses, m.CallsActive, m.Calls, m.CallInfo, m.Registrations, m.Panics, m.Auth)
	return m
}

// Cached children of the counter vectors on the call path. A
// WithLabelValues hashes its label values and looks the child up under a
// lock on every call; a call made a dozen. The children are resolved on
// first use (so /metrics serves the same series as before: none for a
// method never seen) and kept in atomic pointers.

// counterSlot holds one resolved child, or nil before its first use.
type counterSlot struct{ p atomic.Pointer[counterRef] }

type counterRef struct{ prometheus.Counter }

// get returns the child of vec for the label values a and b (b "" for a
// vector with one label).
func (s *counterSlot) get(vec *prometheus.CounterVec, a, b string) prometheus.Counter {
	if r := s.p.Load(); r != nil {
		return r.Counter
	}
	var c prometheus.Counter
	if b == "" {
		c = vec.WithLabelValues(a)
	} else {
		c = vec.WithLabelValues(a, b)
	}
	s.p.Store(&counterRef{c})
	return c
}

// hotCounters caches the call path's children.
type hotCounters struct {
	requests  [2][len(cachedMethods)]counterSlot // direction, method
	responses [2][6]counterSlot                  // direction, class 1xx..6xx
	calls     [2][4]counterSlot                  // origin, result
	callInfo  [3]counterSlot                     // stamped, stripped, kept
}

// cachedMethods are the methods whose request counters are cached.
var cachedMethods = [...]sip.RequestMethod{sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS,
	sip.REGISTER, sip.UPDATE, sip.INFO, sip.PRACK, sip.NOTIFY, sip.REFER, sip.MESSAGE, sip.SUBSCRIBE}

var directions = [2]string{"in", "out"}

func dirIndex(dir string) int {
	if dir == "out" {
		return 1
	}
	return 0
}

// request returns the child of Requests for method and dir ("in"|"out").
func (m *Metrics) request(method sip.RequestMethod, dir string) prometheus.Counter {
	for i, cm := range cachedMethods {
		if cm == method {
			return m.hot.requests[dirIndex(dir)][i].get(m.Requests, string(method), directions[dirIndex(dir)])
		}
	}
	return m.Requests.WithLabelValues(string(method), dir)
}

// response returns the child of Responses for code's class and dir.
func (m *Metrics) response(code int, dir string) prometheus.Counter {
	if k := code / 100; k >= 1 && k <= 6 {
		return m.hot.responses[dirIndex(dir)][k-1].get(m.Responses, classOf(code), directions[dirIndex(dir)])
	}
	return m.Responses.WithLabelValues(classOf(code), dir)
}

var (
	origins = [2]string{"phone", "pbx"}
	results = [4]string{resultAnswered, resultRejected, resultCancelled, resultFailed}
	actions = [3]string{"stamped", "stripped", "kept"}
)

// call returns the child of Calls for origin and result.
func (m *Metrics) call(origin, result string) prometheus.Counter {
	o := slices.Index(origins[:], origin)
	r := slices.Index(results[:], result)
	if o < 0 || r < 0 {
		return m.Calls.WithLabelValues(origin, result)
	}
	return m.hot.calls[o][r].get(m.Calls, origins[o], results[r])
}

// callInfo returns the child of CallInfo for action.
func (m *Metrics) callInfo(action string) prometheus.Counter {
	if a := slices.Index(actions[:], action); a >= 0 {
		return m.hot.callInfo[a].get(m.CallInfo, actions[a], "")
	}
	return m.CallInfo.WithLabelValues(action)
}
