package component

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Values of the access label of cusax_xmpp_privilege.
const (
	AccessRoster   = "roster"
	AccessPresence = "presence"
	AccessMessage  = "message"
	AccessPubSub   = "iq_pubsub"
	AccessVCard    = "iq_vcard"
)

var accessLabels = [...]string{AccessRoster, AccessPresence, AccessMessage, AccessPubSub, AccessVCard}

// Metrics holds the Prometheus collectors of a Component. Its methods are
// safe for concurrent use.
type Metrics struct {
	up         prometheus.Gauge
	reconnects prometheus.Counter
	privilege  *prometheus.GaugeVec
	sync       *prometheus.CounterVec
}

// NewMetrics creates the component's collectors and registers them with reg:
//
//	cusax_xmpp_component_up          gauge 0|1, 1 while the handshake is done and the stream is served
//	cusax_xmpp_reconnects_total      counter, connection attempts after the first one of Run
//	cusax_xmpp_privilege{access}     gauge 0|1 per XEP-0356 grant (see Privileges.Granted)
//	cusax_sync_total{kind,result}    counter, kind=reach|vcard|tombstone, result=ok|unchanged|error|skipped
//
// All five access values exist from the start at 0. A nil reg leaves the
// collectors unregistered (for Probe and tests). NewMetrics panics if reg
// already holds collectors with these names.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cusax_xmpp_component_up",
			Help: "1 while the XEP-0114 component stream is established, 0 otherwise.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cusax_xmpp_reconnects_total",
			Help: "Connection attempts (dial and handshake) made after the first attempt.",
		}),
		privilege: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cusax_xmpp_privilege",
			Help: "1 if the server granted the XEP-0356 privilege named by access on the current stream.",
		}, []string{"access"}),
	}
	m.sync = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cusax_sync_total",
		Help: "Per-user synchronisations of XEP-0152 reachability (kind=reach) and vCard numbers (kind=vcard), and deleted identities cleared (kind=tombstone), by result.",
	}, []string{"kind", "result"})
	for _, a := range accessLabels {
		m.privilege.WithLabelValues(a).Set(0)
	}
	for _, k := range []string{KindReach, KindVCard, KindTombstone} {
		for _, r := range []string{ResultOK, ResultUnchanged, ResultError, ResultSkipped} {
			m.sync.WithLabelValues(k, r)
		}
	}
	if reg != nil {
		reg.MustRegister(m.up, m.reconnects, m.privilege, m.sync)
	}
	return m
}

func (m *Metrics) setUp(up bool) {
	m.up.Set(b2f(up))
}

func (m *Metrics) setPrivileges(p Privileges) {
	g := p.Granted()
	for _, a := range accessLabels {
		m.privilege.WithLabelValues(a).Set(b2f(g[a]))
	}
}

func (m *Metrics) syncResult(kind, result string) {
	m.sync.WithLabelValues(kind, result).Inc()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
