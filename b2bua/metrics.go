package b2bua

import "github.com/prometheus/client_golang/prometheus"

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
