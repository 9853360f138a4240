package component

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsInitialValues(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg)
	const want = `
# HELP cusax_sync_total Per-user synchronisations of XEP-0152 reachability (kind=reach) and vCard numbers (kind=vcard), and deleted identities cleared (kind=tombstone), by result.
# TYPE cusax_sync_total counter
cusax_sync_total{kind="reach",result="error"} 0
cusax_sync_total{kind="reach",result="ok"} 0
cusax_sync_total{kind="reach",result="skipped"} 0
cusax_sync_total{kind="reach",result="unchanged"} 0
cusax_sync_total{kind="tombstone",result="error"} 0
cusax_sync_total{kind="tombstone",result="ok"} 0
cusax_sync_total{kind="tombstone",result="skipped"} 0
cusax_sync_total{kind="tombstone",result="unchanged"} 0
cusax_sync_total{kind="vcard",result="error"} 0
cusax_sync_total{kind="vcard",result="ok"} 0
cusax_sync_total{kind="vcard",result="skipped"} 0
cusax_sync_total{kind="vcard",result="unchanged"} 0
# HELP cusax_xmpp_component_up 1 while the XEP-0114 component stream is established, 0 otherwise.
# TYPE cusax_xmpp_component_up gauge
cusax_xmpp_component_up 0
# HELP cusax_xmpp_privilege 1 if the server granted the XEP-0356 privilege named by access on the current stream.
# TYPE cusax_xmpp_privilege gauge
cusax_xmpp_privilege{access="iq_pubsub"} 0
cusax_xmpp_privilege{access="iq_vcard"} 0
cusax_xmpp_privilege{access="message"} 0
cusax_xmpp_privilege{access="presence"} 0
cusax_xmpp_privilege{access="roster"} 0
# HELP cusax_xmpp_reconnects_total Connection attempts (dial and handshake) made after the first attempt.
# TYPE cusax_xmpp_reconnects_total counter
cusax_xmpp_reconnects_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestMetricsPrivileges(t *testing.T) {
	m := NewMetrics(nil)
	m.setUp(true)
	m.setPrivileges(Privileges{Version: 2, Roster: "get", IQ: map[string]string{NSVCard: "set", NSPubSub: "get"}})
	for access, want := range map[string]float64{
		AccessRoster: 1, AccessPresence: 0, AccessMessage: 0, AccessPubSub: 0, AccessVCard: 1,
	} {
		if got := testutil.ToFloat64(m.privilege.WithLabelValues(access)); got != want {
			t.Errorf("cusax_xmpp_privilege{access=%q} = %g, want %g", access, got, want)
		}
	}
	if got := testutil.ToFloat64(m.up); got != 1 {
		t.Errorf("cusax_xmpp_component_up = %g, want 1", got)
	}
	m.setPrivileges(Privileges{})
	if got := testutil.CollectAndCount(m.privilege); got != len(accessLabels) {
		t.Errorf("%d privilege series, want %d", got, len(accessLabels))
	}
	if got := testutil.ToFloat64(m.privilege.WithLabelValues(AccessVCard)); got != 0 {
		t.Errorf("cusax_xmpp_privilege{access=iq_vcard} = %g after reset, want 0", got)
	}
}

func TestNewMetricsTwicePanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	defer func() {
		if recover() == nil {
			t.Error("second NewMetrics on the same registry did not panic")
		}
	}()
	NewMetrics(reg)
}
