package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/lease"
)

// newXMPPLease returns the Redis lease the component runs under
// (xmpp.lease, config.LeaseEnabled), or nil when every instance connects.
// The lease metrics are registered either way; without a lease
// cusax_xmpp_lease_held is 1 (this instance runs the component on its
// own), so that alerts need not know whether a gateway uses the lease:
// held 0 always means a standby (docs/metrics.md).
func newXMPPLease(cfg *config.Config, store identity.Store, log *slog.Logger, reg prometheus.Registerer) (*lease.Lease, error) {
	m := lease.NewMetrics(reg)
	rs, ok := store.(*identity.RedisStore)
	if !cfg.LeaseEnabled() || !ok {
		m.Held.Set(1)
		return nil, nil
	}
	return lease.New(lease.Config{
		Client: rs.Client(),
		Key:    cfg.Identity.Redis.KeyPrefix + "lease:xmpp:" + cfg.XMPP.Component,
	}, log, m)
}

// runXMPP runs the component, under the lease when there is one.
func (d *daemon) runXMPP(ctx context.Context) error {
	if d.lease == nil {
		return d.xmpp.Run(ctx)
	}
	return d.lease.Run(ctx, d.xmpp.Run)
}

// xmppStatus is the xmpp entry of /healthz and /readyz.
func (d *daemon) xmppStatus() admin.Status {
	server := d.cfg.XMPP.Server
	switch {
	case d.xmpp.Up():
		return admin.Status{State: admin.StateUp, Detail: server + "; " + d.xmpp.Plan().String()}
	case d.lease != nil && !d.lease.Held():
		return admin.Status{State: admin.StateUp, Detail: "standby: another instance holds the component lease"}
	}
	return admin.Status{State: admin.StateDown, Detail: "not connected to " + server + " (retrying)"}
}
