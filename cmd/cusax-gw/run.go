package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/component"
	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
	"github.com/cusax-gw/cusax-gw/internal/api"
	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/lease"
	"github.com/cusax-gw/cusax-gw/rtprelay"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("run", stderr)
	path := fs.String("config", "config.yaml", "configuration `file`")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	cfg, ok := loadConfig(*path, stderr, getenv)
	if !ok {
		return exitUsage
	}
	// A write to a closed stderr pipe (journald gone) returns EPIPE to
	// the log writer, which counts it, instead of killing the process.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	plog := newLogger(cfg, stderr)
	defer plog.close() // also during a panic of this goroutine
	defer onKill(ctx, plog.killed)()
	log := plog.log
	quietLibraries(log)
	tuneGC(cfg.Runtime, getenv, log)
	d, err := newDaemon(cfg, log)
	if err != nil {
		log.Error("startup failed", "err", err)
		return exitFailure
	}
	plog.register(d.reg)
	if err := d.run(ctx); err != nil {
		log.Error("gateway stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

// tuneGC applies runtime.gc_percent and runtime.memory_limit unless the
// GOGC or GOMEMLIMIT environment variable (which the Go runtime already
// applied) is set.
func tuneGC(rt config.Runtime, getenv func(string) string, log *slog.Logger) {
	if getenv == nil {
		getenv = os.Getenv
	}
	gc, limit := getenv("GOGC"), getenv("GOMEMLIMIT")
	if gc == "" {
		debug.SetGCPercent(rt.GCPercent)
		gc = strconv.Itoa(rt.GCPercent)
	}
	if limit == "" && rt.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(rt.MemoryLimit))
		limit = strconv.Itoa(rt.MemoryLimit)
	}
	log.Debug("go garbage collector", "gogc", gc, "gomemlimit", limit)
}

// newRegistry returns the process's metric registry: Go and process
// collectors and cusax_build_info. There is no default registry.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cusax_build_info",
		Help: "Always 1; the labels tell the version, VCS revision and Go version of this build.",
	}, []string{"version", "revision", "goversion"})
	bi.WithLabelValues(version, buildRevision(), runtime.Version()).Set(1)
	reg.MustRegister(bi)
	return reg
}

// daemon is the composition root: the only place that knows every
// subsystem and wires them together.
type daemon struct {
	cfg   *config.Config
	log   *slog.Logger
	reg   *prometheus.Registry
	admin *admin.Server
	sip   *b2bua.B2BUA
	media rtprelay.Media      // what the b2bua anchors calls with
	relay *rtprelay.Relay     // the embedded relay (rtp.backend: embedded)
	rtpe  *rtprelay.Rtpengine // rtpengine over ng (rtp.backend: rtpengine)
	ng    *rtprelay.NGClient
	xmpp  *component.Component
	lease *lease.Lease // nil: the component connects on every instance
	store identity.Store
	dir   *identity.Directory

	// started is closed once every listener is bound and every subsystem
	// runs (tests wait on it).
	started chan struct{}
}

func newDaemon(cfg *config.Config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, reg: newRegistry(), started: make(chan struct{})}
	defer func() {
		if err != nil && d.store != nil {
			d.store.Close()
		}
		if err != nil && d.ng != nil {
			d.ng.Close()
		}
	}()

	norm, err := identity.NewNormalizer(cfg.Identity.DefaultRegion)
	if err != nil {
		return nil, fmt.Errorf("identity.default_region: %w", err)
	}
	switch cfg.Identity.Backend {
	case "redis":
		d.store, err = identity.OpenRedis(cfg.Identity.Redis.URL.Reveal(), identity.RedisOptions{KeyPrefix: cfg.Identity.Redis.KeyPrefix})
	default:
		d.store, err = identity.OpenBolt(cfg.Identity.Path, identity.BoltOptions{})
	}
	if err != nil {
		return nil, err
	}
	d.dir = identity.NewDirectory(d.store, norm, cfg.Identity.Backend, log.With("subsystem", "identity"),
		identity.NewMetrics(d.reg), identity.DirectoryOptions{})

	rtpLog, rtpMetrics := log.With("subsystem", "rtp"), rtprelay.NewMetrics(d.reg)
	switch cfg.RTP.Backend {
	case "rtpengine":
		ng, err := rtprelay.NewNGClient(cfg.RTP.Rtpengine.NG, rtprelay.NGOptions{})
		if err != nil {
			return nil, fmt.Errorf("rtp.rtpengine.ng: %w", err)
		}
		d.ng, d.rtpe = ng, rtprelay.NewRtpengine(ng, rtpLog, rtpMetrics)
		d.media = d.rtpe
	default:
		listen, _ := netip.ParseAddr(cfg.RTP.Listen)
		advertise, _ := netip.ParseAddr(cfg.RTP.Advertise)
		d.relay, err = rtprelay.New(rtprelay.Config{
			Listen: listen, Advertise: advertise,
			PortMin: cfg.RTP.PortMin, PortMax: cfg.RTP.PortMax, Timeout: cfg.RTP.Timeout.D(),
			HoldTimeout: cfg.RTP.HoldTimeout.D(), Engine: cfg.RTP.Engine, Workers: cfg.RTP.Workers,
			Quarantine: cfg.RTP.Quarantine.D(), QuarantineSilent: cfg.RTP.QuarantineSilent.D(),
			// Media timeout: the b2bua hangs up both legs. d.sip exists
			// before any call, so before any timeout.
			OnTimeout: func(callID string) { go d.sip.OnMediaTimeout(callID) },
		}, rtpLog, rtpMetrics)
		if err != nil {
			return nil, err
		}
		d.media = d.relay
	}

	d.xmpp, err = component.New(component.Config{
		JID:        cfg.XMPP.Component,
		Server:     cfg.XMPP.Server,
		Secret:     component.Secret(cfg.XMPP.Secret.Reveal()),
		Domain:     cfg.XMPP.Domain,
		Version:    version,
		Identities: d.store, // the component follows the store's own change feed
		Sync:       syncConfig(cfg),
	}, log.With("subsystem", "xmpp"), component.NewMetrics(d.reg))
	if err != nil {
		return nil, err
	}
	if d.lease, err = newXMPPLease(cfg, d.store, log.With("subsystem", "xmpp"), d.reg); err != nil {
		return nil, err
	}

	tlsConf, err := sipTLS(cfg)
	if err != nil {
		return nil, err
	}
	var listeners []b2bua.Listener
	for _, l := range cfg.SIPListeners() {
		listeners = append(listeners, b2bua.Listener{Network: l.Network, Addr: l.Addr})
	}
	// With Redis, registrations are shared too: a phone registered through
	// one instance is reachable through any other.
	var bindings b2bua.Bindings
	if rs, ok := d.store.(*identity.RedisStore); ok {
		bindings = b2bua.NewRedisBindings(rs.Client(), cfg.Identity.Redis.KeyPrefix, 0)
	}
	b2bua.SetTransactionLinger(cfg.SIP.TransactionLinger.D())
	b2bua.SetAcceptedLinger(cfg.SIP.AcceptedLinger.D())
	udpBuf := cfg.SIP.UDPReceiveBuffer
	if udpBuf == 0 {
		udpBuf = -1 // the kernel's default (0 means the b2bua's default)
	}
	d.sip, err = b2bua.New(b2bua.Config{
		Listen:        listeners,
		UDPReadBuffer: udpBuf,
		TLS:           tlsConf,
		Domain:        cfg.SIP.Domain,
		PBX:           cfg.SIP.PBX,
		Advertise:     cfg.SIP.Advertise,
		UserAgent:     "cusax-gw/" + version,
		Bindings:      bindings,
		CallOptions: b2bua.CallOptions{
			Media:       d.media,
			Resolver:    callerResolver{dir: d.dir, timeout: 200 * time.Millisecond},
			Trusted:     cfg.TrustedPrefixes(),
			CallInfo:    cfg.SIP.CallInfo,
			XMPPContact: cfg.SIP.XMPPContact,
			MaxCalls:    cfg.SIP.MaxCalls,
			MaxCPS:      cfg.SIP.MaxCPS,
			RateLimit:   cfg.SIP.RateLimit,
			MaxDuration: cfg.SIP.MaxDuration.D(),
			RingTimeout: cfg.SIP.RingTimeout.D(),
			PBXPing:     cfg.SIP.PBXPing.D(),
		},
		// sip.auth local: digest against the identity store's credentials.
		Auth:             cfg.SIP.Auth,
		DigestAlgorithms: cfg.SIP.AuthAlgorithms,
		Credentials:      d.dir,
	}, log.With("subsystem", "sip"), b2bua.NewMetrics(d.reg))
	if err != nil {
		return nil, err
	}

	d.admin = admin.New(admin.Config{Listen: cfg.Admin.Listen, Token: cfg.Admin.Token.Reveal(), Pprof: cfg.Admin.Pprof}, d.reg, d.reg, log.With("subsystem", "admin"))
	d.admin.AddCheck("sip", true, func() admin.Status {
		if ok, detail := d.sip.Ready(); ok {
			return admin.Status{State: admin.StateUp, Detail: detail}
		} else {
			return admin.Status{State: admin.StateDown, Detail: detail}
		}
	})
	d.admin.AddCheck("xmpp", false, d.xmppStatus)
	d.admin.AddCheck("rtp", false, func() admin.Status {
		return admin.Status{State: admin.StateUp, Detail: fmt.Sprintf("ports %d..%d", cfg.RTP.PortMin, cfg.RTP.PortMax)}
	})
	d.admin.AddCheck("identity", true, func() admin.Status {
		state, detail := d.dir.Status()
		return admin.Status{State: state, Detail: detail}
	})
	api.Mount(d.admin, d.dir, log.With("subsystem", "api"))
	api.MountCredentials(d.admin, d.dir, cfg.SIP.Domain, log.With("subsystem", "api"))
	return d, nil
}

func sipTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.SIP.TLS.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.SIP.TLS.CertFile, cfg.SIP.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("sip.tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// run binds every listener, runs the subsystems until ctx ends (a signal)
// or one of them fails, then shuts down in the order of STYLE.md:
// readiness 503, SIP refuses new calls, active calls get shutdown.drain,
// then SIP, the component and the relay stop, and the admin server goes
// last so that metrics stay scrapeable during the drain.
func (d *daemon) run(ctx context.Context) error {
	defer d.store.Close()
	if d.ng != nil {
		defer d.ng.Close()
	}
	if err := d.admin.Listen(); err != nil {
		return fmt.Errorf("admin.listen %s: %w", d.cfg.Admin.Listen, err)
	}
	if err := d.sip.Listen(); err != nil {
		return err
	}

	// Each subsystem gets its own context so that they stop in order.
	sipCtx, stopSIP := context.WithCancel(context.Background())
	xmppCtx, stopXMPP := context.WithCancel(context.Background())
	rtpCtx, stopRTP := context.WithCancel(context.Background())
	idCtx, stopIdentity := context.WithCancel(context.Background())
	defer stopIdentity()
	defer stopSIP()
	defer stopXMPP()
	defer stopRTP()

	var g errgroup.Group
	failed := make(chan error, 4)
	start := func(name string, f func() error) {
		g.Go(func() error {
			err := f()
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
				failed <- err
			}
			return err
		})
	}
	start("admin", d.admin.Serve)
	start("identity", func() error { return d.dir.Run(idCtx) })
	start("rtp", func() error {
		if d.rtpe != nil {
			// rtpengine ends silent calls itself; Watch notices. Calls
			// arrive with the b2bua issue, which will hang their legs up.
			err := d.rtpe.Watch(rtpCtx, 10*time.Second, func(callID string) {
				d.log.Info("rtpengine ended the media of a call", "call_id", callID)
			})
			if rtpCtx.Err() != nil {
				return nil
			}
			return err
		}
		return d.relay.Run(rtpCtx)
	})
	start("xmpp", func() error { return d.runXMPP(xmppCtx) })
	start("sip", func() error { return d.sip.Run(sipCtx) })
	d.log.Info("gateway started", "version", version, "sip", d.sip.Addrs(),
		"admin", d.admin.Addr().String(), "xmpp", d.cfg.XMPP.Server)
	close(d.started)

	var cause error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "drain", d.cfg.Shutdown.Drain.String())
	case cause = <-failed:
		d.log.Error("subsystem failed; shutting down", "err", cause)
	}

	d.admin.SetDraining()
	drainCtx, cancel := context.WithTimeout(context.Background(), d.cfg.Shutdown.Drain.D())
	if left := d.sip.Drain(drainCtx); left > 0 {
		d.log.Warn("drain timeout; ending remaining calls", "calls", left)
	}
	cancel()
	stopSIP()
	stopXMPP()
	stopRTP()
	stopIdentity()
	// The admin server goes last; give in-flight scrapes a moment.
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.admin.Shutdown(shutCtx); err != nil {
		d.log.Warn("admin shutdown", "err", err)
	}
	err := g.Wait()
	if cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	d.log.Info("gateway stopped")
	return nil
}

// syncConfig maps xmpp.sync and xmpp.ejabberd_api to the component's SyncConfig.
func syncConfig(cfg *config.Config) component.SyncConfig {
	return component.SyncConfig{
		Reach:       cfg.XMPP.Sync.Reach,
		VCard:       component.VCardMode(cfg.XMPP.Sync.VCard),
		Interval:    cfg.XMPP.Sync.Interval.D(),
		EjabberdAPI: cfg.XMPP.EjabberdAPI,
	}
}
