package b2bua

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Registration passthrough (RFC 3261 section 10), the gateway acting as a
// registrar-facing UA per phone binding:
//
//   - The REGISTER is re-originated toward cfg.PBX as a new client
//     transaction from the gateway's listening socket: the gateway's own
//     single Via (the phone's Vias are not forwarded), the phone's
//     Request-URI, From, To, Call-ID and CSeq unchanged (so the PBX sees
//     the phone's one registration with its CSeq progression, and a digest
//     response computed over the Request-URI stays valid), Authorization
//     and Proxy-Authorization passed through, Max-Forwards decremented.
//   - Each Contact is replaced by the gateway contact
//     <sip:{token}@{gateway};transport=…> with its expires and q
//     parameters; the token is derived from the AOR and the phone's
//     Contact URI, so refreshes keep the same gateway contact.
//   - The PBX's final response is relayed with the phone's Via, its
//     challenges and expiry headers, and its Contact list rewritten back:
//     gateway contacts become the phones' contacts.
//   - Bindings are written only after a 200 (the AOR is trusted only once
//     the PBX accepted the request): with the expiry the PBX granted,
//     deleted when it granted 0 or no longer lists the gateway contact.

// tokenPrefix starts every gateway contact's user part.
const tokenPrefix = "cx-"

// defaultExpires is the registration interval when the phone asks none
// (RFC 3261 section 10.2.1.1 leaves it to the registrar; 3600 is usual).
const defaultExpires = 3600

// bindingToken is the gateway contact user part for a phone contact.
func bindingToken(aor, contact string) string {
	h := sha256.Sum256([]byte(aor + "\n" + contact))
	return tokenPrefix + hex.EncodeToString(h[:10])
}

// aorOf returns the normalised AOR of a To/From URI: scheme:user@host,
// host lowercase, no port or parameters.
func aorOf(u sip.Uri) string {
	scheme := strings.ToLower(u.Scheme)
	if scheme == "" {
		scheme = "sip"
	}
	if u.User == "" {
		return scheme + ":" + strings.ToLower(u.Host)
	}
	return scheme + ":" + u.User + "@" + strings.ToLower(u.Host)
}

// pbxTarget is the parsed next hop.
type pbxTarget struct {
	uri       sip.Uri
	transport string // UDP|TCP|TLS|WS|WSS
	hostport  string
	// registering marks the REGISTERs in flight toward this PBX, for
	// route (bindings_inflight.go); set by parsePBX.
	registering *regFlights
}

func parsePBX(s string) (pbxTarget, error) {
	var t pbxTarget
	if err := sip.ParseUri(s, &t.uri); err != nil {
		return t, err
	}
	if t.uri.Host == "" {
		return t, errors.New("no host")
	}
	t.transport = strings.ToUpper(t.uri.UriParams.GetOr("transport", "udp"))
	if t.uri.Scheme == "sips" && t.transport == "TCP" {
		t.transport = "TLS"
	}
	port := t.uri.Port
	if port == 0 {
		port = sip.DefaultPort(t.transport)
	}
	t.hostport = net.JoinHostPort(t.uri.Host, strconv.Itoa(port))
	t.registering = &regFlights{}
	return t, nil
}

// setupPBXClient prepares the client that talks to the PBX, from the
// listener of the PBX's transport. Called by Listen once sockets are bound.
func (b *B2BUA) setupPBXClientLocked() error {
	if b.cfg.PBX == "" {
		return nil
	}
	network := strings.ToLower(b.pbx.transport)
	var laddr string
	for _, c := range b.udp {
		if network == "udp" {
			laddr = c.LocalAddr().String()
			break
		}
	}
	for _, l := range b.listeners {
		if laddr == "" && l.network == network {
			laddr = l.ln.Addr().String()
		}
	}
	if laddr == "" {
		return errors.New("no " + network + " listener for sip.pbx " + b.cfg.PBX)
	}
	host, portStr, err := net.SplitHostPort(laddr)
	if err != nil {
		return err
	}
	port, _ := strconv.Atoi(portStr)
	adv := b.cfg.Advertise
	if adv == "" {
		adv = host
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			adv = "127.0.0.1"
			// The local address toward the PBX (no packet is sent).
			if c, err := net.Dial("udp", b.pbx.hostport); err == nil {
				adv, _, _ = net.SplitHostPort(c.LocalAddr().String())
				c.Close()
			}
		}
	}
	opts := []sipgo.ClientOption{
		sipgo.WithClientHostname(adv), sipgo.WithClientPort(port),
		sipgo.WithClientLogger(b.log.With("component", "sipgo")),
	}
	if network == "udp" {
		// Outbound UDP must leave from the listening socket.
		opts = append(opts, sipgo.WithClientConnectionAddr(laddr))
	}
	c, err := sipgo.NewClient(b.ua, opts...)
	if err != nil {
		return err
	}
	b.pbxClient = c
	b.gwHost, b.gwPort = adv, port
	return nil
}

// gatewayContact is the contact the PBX learns for token.
func (b *B2BUA) gatewayContact(token string) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: token, Host: b.gwHost, Port: b.gwPort}
	u.UriParams = sip.NewParams()
	u.UriParams.Add("transport", strings.ToLower(b.pbx.transport))
	return u
}

// pendingContact is one phone contact of a REGISTER in flight.
type pendingContact struct {
	token   string
	phone   *sip.ContactHeader
	expires int // requested
}

func (b *B2BUA) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	if b.draining.Load() {
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
		return
	}
	if b.pbxClient == nil {
		b.respond(tx, req, 501, "Not Implemented")
		return
	}
	if b.pbxDown.Load() {
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter(), pbxDownWarning)
		return
	}
	to, callid, cseq := req.To(), req.CallID(), req.CSeq()
	if to == nil || req.From() == nil || callid == nil || cseq == nil {
		b.respond(tx, req, 400, "Bad Request")
		return
	}
	log := b.log.With("call_id", callid.Value())
	aor := aorOf(to.Address)
	// sip.auth local: the gateway challenges; the PBX then gets the
	// REGISTER without the phone's Authorization for our realm.
	if _, ok := b.authenticate(context.Background(), req, tx); !ok {
		return
	}

	fwd := sip.NewRequest(sip.REGISTER, *req.Recipient.Clone())
	fwd.AppendHeader(sip.HeaderClone(req.From()))
	fwd.AppendHeader(sip.HeaderClone(to))
	fwd.AppendHeader(sip.HeaderClone(callid))
	fwd.AppendHeader(sip.HeaderClone(cseq))
	mf := sip.MaxForwardsHeader(70)
	if h := req.MaxForwards(); h != nil {
		if h.Val() <= 1 {
			b.respond(tx, req, 483, "Too Many Hops")
			return
		}
		mf = sip.MaxForwardsHeader(h.Val() - 1)
	}
	fwd.AppendHeader(&mf)

	reqExpires := defaultExpires
	if h := req.GetHeader("Expires"); h != nil {
		n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || n < 0 {
			b.respond(tx, req, 400, "Bad Request")
			return
		}
		reqExpires = n
	}
	var pending []pendingContact
	wildcard := false
	for _, h := range req.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			b.respond(tx, req, 400, "Bad Request")
			return
		}
		if c.Address.Wildcard {
			wildcard = true
			fwd.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Wildcard: true}})
			continue
		}
		exp := reqExpires
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				b.respond(tx, req, 400, "Bad Request")
				return
			}
			exp = n
		}
		p := pendingContact{token: bindingToken(aor, c.Address.String()), phone: c, expires: exp}
		pending = append(pending, p)
		gc := &sip.ContactHeader{Address: b.gatewayContact(p.token), Params: sip.NewParams()}
		for _, k := range []string{"expires", "q"} {
			if v, ok := c.Params.Get(k); ok {
				gc.Params.Add(k, v)
			}
		}
		fwd.AppendHeader(gc)
	}
	if wildcard && (len(pending) > 0 || reqExpires != 0) {
		// RFC 3261 section 10.3 step 6.
		b.respond(tx, req, 400, "Bad Request")
		return
	}
	for _, name := range []string{"Expires", "Authorization", "Proxy-Authorization", "Supported", "Require", "User-Agent", "Allow"} {
		for _, h := range req.GetHeaders(name) {
			fwd.AppendHeader(sip.HeaderClone(h))
		}
	}
	fwd.SetTransport(b.pbx.transport)
	fwd.SetDestination(b.pbx.hostport)
	fwd.SetBody(nil)

	// Routing waits for these keys until the bindings are written (the
	// REGISTER/INVITE race, bindings_inflight.go).
	keys := make([]string, 0, len(pending)+1)
	for _, p := range pending {
		keys = append(keys, p.token)
	}
	endFlight := sync.OnceFunc(b.pbx.registering.begin(append(keys, aor)))
	defer endFlight()

	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.PBXTimeout)
	defer cancel()
	res, err := b.doPBX(ctx, fwd)
	if err != nil {
		log.Warn("register to pbx failed", "aor", aor, "peer", b.pbx.hostport, "err", err)
		b.pbxTimedOut(err)
		code, reason := 503, "Service Unavailable"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sip.ErrTransactionTimeout) {
			code, reason = 408, "Request Timeout"
		}
		b.respond(tx, req, code, reason)
		return
	}

	out := sip.NewResponseFromRequest(req, res.StatusCode, res.Reason, nil)
	if pt := res.To(); pt != nil {
		if tag, ok := pt.Params.Get("tag"); ok {
			out.To().Params.Add("tag", tag)
		}
	}
	for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate", "Expires", "Min-Expires", "Date",
		"Retry-After", "Warning", "Unsupported", "Supported", "Allow", "Authentication-Info"} {
		for _, h := range res.GetHeaders(name) {
			out.AppendHeader(sip.HeaderClone(h))
		}
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		b.applyRegistration(ctx, log, req, res, out, aor, pending, wildcard)
	}
	endFlight()
	out.AppendHeader(b.serverHeader())
	if err := tx.Respond(out); err != nil {
		log.Debug("respond failed", "status", res.StatusCode, "err", err)
		return
	}
	b.m.response(res.StatusCode, "out").Inc()
}

// doPBX sends req to the PBX and waits for its final response.
func (b *B2BUA) doPBX(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	b.m.request(req.Method, "out").Inc()
	tx, err := b.pbxClient.TransactionRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			b.m.response(res.StatusCode, "in").Inc()
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, errors.New("transaction ended without response")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// applyRegistration updates the bindings from the PBX's 2xx and writes the
// rewritten Contact list into out.
func (b *B2BUA) applyRegistration(ctx context.Context, log interface {
	Warn(string, ...any)
}, req *sip.Request, res, out *sip.Response, aor string, pending []pendingContact, wildcard bool) {
	now := b.cfg.Now()
	resExpires := -1
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			resExpires = n
		}
	}
	mine := map[string]*pendingContact{}
	for i := range pending {
		mine[pending[i].token] = &pending[i]
	}
	granted := map[string]int{}
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.Wildcard {
			continue
		}
		rc := &sip.ContactHeader{DisplayName: c.DisplayName, Address: *c.Address.Clone(), Params: c.Params.Clone()}
		token := c.Address.User
		if strings.HasPrefix(token, tokenPrefix) && strings.EqualFold(c.Address.Host, b.gwHost) {
			if p, ok := mine[token]; ok {
				exp := p.expires
				if v, ok := c.Params.Get("expires"); ok {
					if n, err := strconv.Atoi(v); err == nil {
						exp = n
					}
				} else if resExpires >= 0 {
					exp = resExpires
				}
				granted[token] = exp
				rc.Address = *p.phone.Address.Clone()
			} else if bd, err := b.bindings.ByToken(ctx, token); err == nil {
				var u sip.Uri
				if sip.ParseUri(bd.Contact, &u) == nil {
					rc.Address = u
				}
			}
		}
		out.AppendHeader(rc)
	}
	changed := false
	if wildcard {
		bs, err := b.bindings.ByAOR(ctx, aor)
		if err != nil {
			log.Warn("binding lookup failed", "aor", aor, "err", err)
		}
		for _, bd := range bs {
			if err := b.bindings.Delete(ctx, bd.Token); err != nil {
				log.Warn("binding delete failed", "aor", aor, "err", err)
			}
			changed = true
		}
	}
	for _, p := range pending {
		exp, ok := granted[p.token]
		if !ok || exp <= 0 {
			if err := b.bindings.Delete(ctx, p.token); err != nil {
				log.Warn("binding delete failed", "aor", aor, "err", err)
			}
			changed = true
			continue
		}
		bd := Binding{
			Token:     p.token,
			AOR:       aor,
			Contact:   p.phone.Address.String(),
			Source:    req.Source(),
			Transport: req.Transport(),
			CallID:    req.CallID().Value(),
			Expires:   now.Add(time.Duration(exp) * time.Second),
		}
		if err := b.bindings.Put(ctx, bd); err != nil {
			log.Warn("binding store failed", "aor", aor, "err", err)
		}
		changed = true
	}
	if changed {
		b.updateGauge(ctx)
	}
}

// updateGauge sets cusax_registrations_active from the store.
func (b *B2BUA) updateGauge(ctx context.Context) {
	if n, err := b.bindings.Len(ctx); err == nil {
		b.m.Registrations.Set(float64(n))
	}
}

// sweep removes expired bindings and refreshes the gauge.
func (b *B2BUA) sweep(ctx context.Context) {
	if _, err := b.bindings.Expire(ctx, b.cfg.Now()); err != nil {
		b.log.Warn("binding expiry failed", "err", err)
	}
	b.updateGauge(ctx)
}
