package b2bua

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"golang.org/x/sync/errgroup"
)

// sipgo refuses to send UDP messages over sip.UDPMTUSize-200 bytes (1,300
// by default). Raised deliberately, at package initialisation because it is
// a process global that sipgo's transports read without synchronisation:
// an INVITE with a video offer, a few Vias and Record-Routes must not fail;
// fragmented datagrams are better than failed calls (phones use TCP above
// that).
func init() {
	if sip.UDPMTUSize < 8192 {
		sip.UDPMTUSize = 8192
	}
}

// DefaultTransactionLinger is RFC 3261's wait of a finished transaction for
// retransmissions (64*T1): sipgo's Timers D and J.
const DefaultTransactionLinger = 32 * time.Second

// DefaultAcceptedLinger is how long an INVITE transaction answered with a
// 2xx is kept by default (sipgo's Timers L and M; RFC 6026 says 64*T1).
const DefaultAcceptedLinger = time.Second

// SetTransactionLinger sets how long a finished SIP transaction is kept to
// absorb retransmissions (sipgo's Timers D and J; Kamailio's wt_timer);
// d <= 0 restores DefaultTransactionLinger. What arrives later is handled
// without it: a late BYE finds no dialog.
//
// The timers are process globals that sipgo reads without
// synchronisation: call it before any user agent starts (cusax-gw run
// does, from sip.transaction_linger). A call with the value already in
// force writes nothing.
func SetTransactionLinger(d time.Duration) {
	if d <= 0 {
		d = DefaultTransactionLinger
	}
	if sip.Timer_D == d && sip.Timer_J == d {
		return
	}
	sip.Timer_D, sip.Timer_J = d, d
}

// SetAcceptedLinger sets how long an INVITE transaction that ended in a
// 2xx is kept (sipgo's Timers L and M, RFC 6026's Accepted state); d <= 0
// restores DefaultAcceptedLinger. These transactions hold a call's
// largest messages (INVITE and 2xx, with SDP): at 2,000 calls/s each
// second of linger keeps ~15 MB alive, and sipgo keeps them that long
// even once terminated. The B2BUA does their work itself, for as long as
// sip.transaction_linger after the call: a copy of a call's initial
// INVITE on the same branch is absorbed (another branch: 482), the 2xx is
// retransmitted until the ACK comes (RFC 3261 13.3.1.4), and a 2xx the
// PBX retransmits is ACKed again.
//
// Like SetTransactionLinger, call it before any user agent starts.
func SetAcceptedLinger(d time.Duration) {
	if d <= 0 {
		d = DefaultAcceptedLinger
	}
	if sip.Timer_L == d && sip.Timer_M == d {
		return
	}
	sip.Timer_L, sip.Timer_M = d, d
}

// B2BUA is the SIP back-to-back user agent. Create it with New, bind its
// listeners with Listen, then Run it. Drain starts a graceful shutdown.
type B2BUA struct {
	cfg Config
	log *slog.Logger
	m   *Metrics

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	// writeResponse sends a response statelessly (srv.WriteResponse;
	// tests record it).
	writeResponse func(*sip.Response) error

	pbx       pbxTarget
	pbxClient *sipgo.Client // set by Listen when cfg.PBX is set
	gwHost    string        // host and port of the gateway contacts
	gwPort    int
	bindings  Bindings

	draining atomic.Bool
	serving  atomic.Bool
	pbxDown  atomic.Bool

	clients    map[string]*sipgo.Client      // by listening network; set by Listen
	clientAddr map[string]string             // advertised host:port per network
	contacts   map[string]*sip.ContactHeader // our Contact per network (read-only)

	callKey [32]byte  // derives B-leg Call-IDs
	callMAC sync.Pool // *callMAC: HMAC-SHA256 with callKey, reused
	impp    imppCache // Call-Info values of the JIDs stamped
	// hdrServer and hdrSDP are the Server and the SDP Content-Type
	// headers, appended to every message that has one: shared, read-only.
	hdrServer, hdrSDP sip.Header
	cps               *limiter
	rate              *sourceLimiter
	callsMu           sync.Mutex
	calls             map[string]*call  // by media key
	dialogs           map[dialogID]*leg // by dialogKey
	// outCallIDs counts the calls using each B-leg Call-ID (loop detection).
	outCallIDs map[string]int
	// initial holds the top Via branch of the initial INVITE of every call
	// in progress, ended holds those of calls that ended recently: a copy
	// arriving after its server transaction ended is absorbed (same
	// branch: a retransmission) or answered 482 (a merged request), never
	// a second call.
	initial map[initialKey]string
	ended   recentInvites
	pending int           // admitted calls not yet in calls
	idle    chan struct{} // closed when the last call ends (Drain)

	mu        sync.Mutex
	udp       []net.PacketConn
	listeners []struct {
		network string
		ln      net.Listener
	}
}

// New validates cfg and prepares the SIP stack; it binds nothing.
func New(cfg Config, log *slog.Logger, m *Metrics) (*B2BUA, error) {
	cfg.setDefaults()
	cfg.CallOptions.setDefaults()
	if err := errors.Join(cfg.validate(), cfg.CallOptions.validate()); err != nil {
		return nil, err
	}
	var b *B2BUA
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(cfg.UserAgent), sipgo.WithUserAgenTLSConfig(cfg.TLS),
		sipgo.WithUserAgentParser(newFastParser()),
		newDialPolicy(cfg).option(),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerUnhandledResponseHandler(
			func(res *sip.Response) { b.onStrayResponse(res) })))
	if err != nil {
		return nil, fmt.Errorf("b2bua: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log.With("component", "sipgo")))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("b2bua: %w", err)
	}
	bindings := cfg.Bindings
	if _, local := bindings.(*MemoryBindings); !local {
		// A shared store (Redis): keep routing to known phones through
		// its outages.
		bindings = newFallbackBindings(bindings, cfg.Now)
	}
	b = &B2BUA{cfg: cfg, log: log, m: m, ua: ua, srv: srv, writeResponse: srv.WriteResponse, bindings: bindings,
		cps: newLimiter(cfg.MaxCPS), rate: newSourceLimiter(cfg.RateLimit),
		calls: map[string]*call{}, dialogs: map[dialogID]*leg{}, outCallIDs: map[string]int{},
		initial: map[initialKey]string{}, ended: recentInvites{keep: sip.Timer_J}}
	rand.Read(b.callKey[:])
	b.callMAC.New = func() any { return &callMAC{h: hmac.New(sha256.New, b.callKey[:])} }
	b.hdrServer, b.hdrSDP = sip.NewHeader("Server", cfg.UserAgent), sip.NewHeader("Content-Type", "application/sdp")
	if cfg.PBX != "" {
		if b.pbx, err = parsePBX(cfg.PBX); err != nil {
			ua.Close()
			return nil, fmt.Errorf("b2bua: sip.pbx %q: %w", cfg.PBX, err)
		}
	}
	srv.OnOptions(b.handle(b.onDialogMethod(b.onOptions)))
	srv.OnRegister(b.handle(b.onRegister))
	srv.OnInvite(b.handle(b.onInvite))
	srv.OnBye(b.handle(b.onDialogMethod(func(req *sip.Request, tx sip.ServerTransaction) {
		b.respond(tx, req, 481, "Call/Transaction Does Not Exist")
	})))
	for _, method := range []sip.RequestMethod{sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO,
		sip.MESSAGE, sip.UPDATE, sip.PRACK, sip.PUBLISH} {
		srv.OnRequest(method, b.handle(b.onDialogMethod(b.onNotImplemented)))
	}
	srv.OnAck(b.onAck)
	return b, nil
}

// Listen binds every configured listener. On error, nothing stays bound.
func (b *B2BUA) Listen() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	fail := func(l Listener, err error) error {
		b.closeLocked()
		return fmt.Errorf("b2bua: listen %s: %w", l, err)
	}
	for _, l := range b.cfg.Listen {
		switch l.Network {
		case "udp":
			c, err := net.ListenPacket("udp", l.Addr)
			if err != nil {
				return fail(l, err)
			}
			if want := b.cfg.UDPReadBuffer; want > 0 {
				if got := setReadBuffer(c, want); got < want {
					b.log.Warn("sip udp receive buffer smaller than configured: raise net.core.rmem_max or grant CAP_NET_ADMIN",
						"listen", l.String(), "want_bytes", want, "got_bytes", got)
				}
			}
			b.m.udpDrops.add(c)
			b.udp = append(b.udp, c)
		default:
			ln, err := net.Listen("tcp", l.Addr)
			if err != nil {
				return fail(l, err)
			}
			if l.Network == "tls" || l.Network == "wss" {
				ln = tls.NewListener(ln, b.cfg.TLS)
			}
			b.listeners = append(b.listeners, struct {
				network string
				ln      net.Listener
			}{l.Network, ln})
		}
	}
	if err := b.setupPBXClientLocked(); err != nil {
		b.closeLocked()
		return fmt.Errorf("b2bua: %w", err)
	}
	if err := b.setupClientsLocked(); err != nil {
		b.closeLocked()
		return fmt.Errorf("b2bua: %w", err)
	}
	// Bound sockets queue requests until Run serves them: ready from now.
	b.serving.Store(true)
	return nil
}

func (b *B2BUA) closeLocked() {
	for _, c := range b.udp {
		c.Close()
	}
	for _, l := range b.listeners {
		l.ln.Close()
	}
	b.udp, b.listeners = nil, nil
}

// Addrs returns the bound listener addresses as network://host:port.
func (b *B2BUA) Addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, c := range b.udp {
		out = append(out, "udp://"+c.LocalAddr().String())
	}
	for _, l := range b.listeners {
		out = append(out, l.network+"://"+l.ln.Addr().String())
	}
	return out
}

// Run serves SIP on the bound listeners until ctx ends, then closes them
// and the SIP stack. It returns nil after a clean stop.
func (b *B2BUA) Run(ctx context.Context) error {
	b.mu.Lock()
	udp, listeners := b.udp, b.listeners
	b.mu.Unlock()
	if len(udp)+len(listeners) == 0 {
		return errors.New("b2bua: Run called before Listen")
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		runStackBallast(gctx)
		return nil
	})
	for _, c := range udp {
		g.Go(func() error { return b.srv.ServeUDP(servedConn(c)) })
	}
	for _, l := range listeners {
		g.Go(func() error {
			switch l.network {
			case "tcp":
				return b.srv.ServeTCP(l.ln)
			case "tls":
				return b.srv.ServeTLS(l.ln)
			case "ws":
				return b.srv.ServeWS(l.ln)
			default:
				return b.srv.ServeWSS(l.ln)
			}
		})
	}
	g.Go(func() error {
		b.watchPBX(gctx)
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(b.cfg.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				b.sweep(gctx)
				b.rate.sweep(b.cfg.Now())
			}
		}
	})
	<-gctx.Done()
	b.serving.Store(false)
	b.mu.Lock()
	b.closeLocked()
	b.mu.Unlock()
	err := g.Wait()
	b.ua.Close()
	if ctx.Err() != nil && (err == nil || errors.Is(err, net.ErrClosed)) {
		return nil
	}
	if err == nil {
		err = errors.New("listener stopped")
	}
	return fmt.Errorf("b2bua: %w", err)
}

// Drain makes the gateway answer new INVITEs and REGISTERs with 503 and
// Retry-After, then waits until the active calls have ended or ctx ends;
// then it hangs up the calls left (BYE on both legs). It reports how many
// calls were still active when ctx ended (0 after a clean drain).
func (b *B2BUA) Drain(ctx context.Context) int {
	b.draining.Store(true)
	n := b.waitIdle(ctx)
	if n > 0 {
		b.log.Warn("drain timeout: hanging up the calls left", "calls", n)
		b.hangupAll(`SIP;cause=503;text="shutting down"`)
	}
	return n
}

// waitIdle waits until no call is active or being set up, or ctx ends; it
// returns the number of calls then left.
func (b *B2BUA) waitIdle(ctx context.Context) int {
	for {
		b.callsMu.Lock()
		if b.pending+len(b.calls) == 0 {
			b.callsMu.Unlock()
			return 0
		}
		if b.idle == nil {
			b.idle = make(chan struct{})
		}
		idle := b.idle
		b.callsMu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return b.ActiveCalls()
		}
	}
}

// Bindings returns the store of the registrations made through the
// gateway (cfg.Bindings, or the memory store New created).
func (b *B2BUA) Bindings() Bindings { return b.bindings }

// Ready reports whether the SIP listeners are bound and served (from a
// successful Listen until Run stops), for /readyz.
func (b *B2BUA) Ready() (bool, string) {
	if b.serving.Load() {
		return true, fmt.Sprint(b.Addrs())
	}
	return false, "listeners not serving"
}

// handle wraps a request handler with metrics and per-request panic
// recovery: a bug in one request must not take the other calls down.
func (b *B2BUA) handle(h func(*sip.Request, sip.ServerTransaction)) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		b.m.request(req.Method, "in").Inc()
		if b.rate != nil && !b.cfg.trusted(req.Source()) && !b.rate.allow(req.Source(), b.cfg.Now()) {
			b.m.Rejected.WithLabelValues("rate_limit").Inc()
			b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
			return
		}
		if r := checkRequest(req); r != nil {
			b.respond(tx, req, r.code, r.reason, r.hdrs...)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				b.m.Panics.Inc()
				b.log.Error("panic in request handler", "method", string(req.Method), "call_id", callID(req), "err", fmt.Sprint(r))
				b.respond(tx, req, 500, "Server Internal Error")
			}
		}()
		h(req, tx)
	}
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// respond answers req and counts the response.
func (b *B2BUA) respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(b.serverHeader())
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	b.m.response(code, "out").Inc()
	if err := tx.Respond(res); err != nil {
		b.log.Debug("respond failed", "call_id", callID(req), "status", code, "err", err)
	}
}

// serverHeader returns the Server header (shared, read-only).
func (b *B2BUA) serverHeader() sip.Header {
	if b.hdrServer == nil { // a B2BUA not made by New (tests)
		return sip.NewHeader("Server", b.cfg.UserAgent)
	}
	return b.hdrServer
}

// sdpType returns the Content-Type header of an SDP body (shared,
// read-only).
func (b *B2BUA) sdpType() sip.Header {
	if b.hdrSDP == nil {
		return sip.NewHeader("Content-Type", "application/sdp")
	}
	return b.hdrSDP
}

func (b *B2BUA) retryAfter() sip.Header {
	return sip.NewHeader("Retry-After", strconv.Itoa(int(b.cfg.RetryAfter.Seconds())))
}

const allowed = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, NOTIFY, REFER, UPDATE, MESSAGE, SUBSCRIBE"

func (b *B2BUA) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	if b.draining.Load() {
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
		return
	}
	b.respond(tx, req, 200, "OK", sip.NewHeader("Allow", allowed), sip.NewHeader("Accept", "application/sdp"))
}

func (b *B2BUA) onNotImplemented(req *sip.Request, tx sip.ServerTransaction) {
	if b.draining.Load() && (req.Method == sip.INVITE || req.Method == sip.REGISTER) {
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
		return
	}
	b.respond(tx, req, 501, "Not Implemented")
}
