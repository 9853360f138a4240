package b2bua

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/emiago/sipgo/sip"
)

// Calls. A call is two dialogs: the A-leg, the INVITE the gateway received
// (it is the UAS), and the B-leg, the INVITE it sent (the UAC). From a phone
// the B-leg goes to sip.pbx; from a trusted peer (the PBX) toward a
// gateway contact, to the phone's registered contact at the address it
// registered from. Each call has exactly one teardown path, endCall.
//
// What crosses between legs is a whitelist (topology hiding): the B-leg
// gets its own Call-ID, tags, Via and Contact; bodies and a fixed set of
// headers are copied; SDP goes through the media relay.

// call is one bridged call.
type call struct {
	id      string // the A-leg Call-ID, for logs
	mediaID string // the key toward the media relay
	init    initialKey
	branch  string // the top Via branch of the initial INVITE
	a, b    *leg
	start   time.Time
	logger  *slog.Logger // the gateway's: log() adds the call_id

	anchored atomic.Bool // media.Offer succeeded at least once

	cancelOnce sync.Once
	cancelled  chan struct{} // closed when the caller CANCELs the initial INVITE

	mu       sync.Mutex
	answered bool
	reinvite bool // an offer/answer exchange (re-INVITE, UPDATE) is in progress
	fromPBX  bool // origin pbx (a trusted peer's call), not phone; set once, before the call is shared
	endOnce  sync.Once
	done     chan struct{}
	maxTimer *time.Timer
}

// Results of cusax_calls_total.
const (
	resultAnswered  = "answered"
	resultRejected  = "rejected"
	resultCancelled = "cancelled"
	resultFailed    = "failed"
)

// inviteHeaders are the request headers copied from the A-leg INVITE to the
// B-leg INVITE (besides the body and its Content-Type).
var inviteHeaders = []string{"Allow", "Accept", "Subject", "Priority", "Organization",
	"User-Agent", "Call-Info", "Content-Disposition", "Content-Language", "Accept-Language",
	"Allow-Events", "Session-ID"}

// trustedInviteHeaders are copied only from a trusted peer.
var trustedInviteHeaders = []string{"P-Asserted-Identity", "Privacy", "Alert-Info", "Referred-By"}

// responseHeaders are copied from a B-leg response to the A-leg one.
var responseHeaders = []string{"Allow", "Accept", "Warning", "Retry-After", "Reason",
	"Unsupported", "WWW-Authenticate", "Proxy-Authenticate", "Call-Info", "Alert-Info",
	"Content-Disposition", "Session-ID", "Server"}

// inDialogHeaders are copied between legs on in-dialog requests.
var inDialogHeaders = []string{"Event", "Subscription-State", "Refer-To", "Referred-By",
	"Info-Package", "Content-Disposition", "Accept", "Allow", "Reason", "Subject", "Replaces"}

// unsupportedExtensions are option tags the gateway removes from Supported
// and refuses in Require (it implements neither reliable provisional
// responses nor session timers; RFC 3261 section 8.2.2.3).
func unsupportedExtension(tag string) bool {
	switch strings.ToLower(strings.TrimSpace(tag)) {
	case "", "replaces", "norefersub", "from-change", "histinfo":
		return false
	}
	return true
}

// onInvite handles every INVITE: initial ones start a call, those with a To
// tag are re-INVITEs of an existing dialog.
func (b *B2BUA) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		b.onInDialog(req, tx)
		return
	}
	b.newCall(req, tx)
}

func (b *B2BUA) newCall(req *sip.Request, tx sip.ServerTransaction) {
	from, to, callid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	if from == nil || to == nil || callid == nil || cseq == nil {
		b.respond(tx, req, 400, "Bad Request")
		return
	}
	if b.draining.Load() {
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
		return
	}
	if b.pbxClient == nil {
		b.respond(tx, req, 503, "Service Unavailable", sip.NewHeader("Warning", `399 cusax-gw "no sip.pbx configured"`))
		return
	}
	contact, ok := sipContact(req)
	if !ok {
		b.respond(tx, req, 400, "Bad Request", sip.NewHeader("Warning", `399 cusax-gw "no SIP Contact"`))
		return
	}
	mf := sip.MaxForwardsHeader(70)
	if h := req.MaxForwards(); h != nil {
		if h.Val() <= 1 {
			b.respond(tx, req, 483, "Too Many Hops")
			return
		}
		mf = sip.MaxForwardsHeader(h.Val() - 1)
	}
	fromTag, _ := from.Params.Get("tag")
	init := initialKey{callID: callid.Value(), fromTag: fromTag, seq: cseq.SeqNo}
	branch := topBranch(req)
	if _, tagged := to.Params.Get("tag"); !tagged {
		if known, ok := b.initialBranch(init); ok {
			// A copy of the initial INVITE of a call in progress or just
			// ended whose server transaction is gone (sip.accepted_linger).
			if known == branch && branch != "" {
				// A retransmission: absorbed, as the transaction would.
				b.log.Debug("initial INVITE retransmission absorbed", "call_id", init.callID)
				b.m.Absorbed.Inc()
				return
			}
			// A merged request (RFC 3261 8.2.2.2).
			b.respond(tx, req, 482, "Loop Detected")
			return
		}
	}
	trusted := b.cfg.trusted(req.Source())
	if !trusted && b.isOwnCallID(callid.Value()) {
		// Our own B-leg INVITE came back from an untrusted source: sip.pbx
		// (or a phone's proxy) points at the gateway itself.
		b.respond(tx, req, 482, "Loop Detected")
		return
	}
	origin := "phone"
	if trusted {
		origin = "pbx"
	}
	// Admission: concurrent calls, then calls per second.
	if reason := b.admit(); reason != "" {
		b.m.call(origin, resultRejected).Inc()
		b.m.Rejected.WithLabelValues(reason).Inc()
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
		return
	}
	admitted := true
	defer func() {
		if admitted {
			b.release()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var authAOR string
	if !trusted {
		aor, ok := b.authenticate(ctx, req, tx)
		if !ok {
			return // answered 401/407/403
		}
		authAOR = aor
	}

	c, breq, ok := b.prepareCall(ctx, req, tx, trusted, origin, authAOR, contact, mf)
	if !ok {
		return
	}
	bl := c.b

	// From here the call exists and ends only through endCall.
	admitted = false
	c.init, c.branch = init, branch
	b.addCall(c)
	c.log().callStart(origin, aorOf(from.Address), aorOf(to.Address), bl.callID)
	if b.cfg.MaxDuration > 0 {
		c.maxTimer = time.AfterFunc(b.cfg.MaxDuration, func() {
			c.log().Info("maximum call duration reached", "max_duration", b.cfg.MaxDuration)
			b.endCall(c, nil, resultAnswered, 0, `SIP;cause=200;text="maximum call duration"`)
		})
	}
	b.bridgeInvite(ctx, c, req, tx, breq)
}

// prepareCall builds the call and its B-leg INVITE: where the B-leg goes,
// both legs, the whitelisted headers, identity and media. It answers req
// itself and returns false when the call cannot be set up. It is apart from
// newCall, and bLegDest, newCallLegs and bLegInvite apart from it, to keep
// the frames small while the media relay and identity lookups run below
// them: the goroutine running an INVITE (sipgo's, one per request) grew,
// copying, its stack on every call (prepareCall's frame alone was 3 KB).
func (b *B2BUA) prepareCall(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, trusted bool, origin, authAOR string,
	contact *sip.ContactHeader, mf sip.MaxForwardsHeader) (*call, *sip.Request, bool) {
	cl := new(callLegs)
	bl := &cl.b
	target, ok := b.bLegDest(ctx, req, tx, trusted, origin, bl)
	if !ok {
		return nil, nil, false
	}
	c := b.newCallLegs(req, tx, origin, contact, cl)
	if c == nil {
		return nil, nil, false
	}
	breq, bfrom := b.bLegInvite(req, bl, target, trusted, authAOR, mf)
	b.identify(c, req, breq, trusted, authAOR, bfrom)

	// Media: the offer in the INVITE (or, without one, in the B-leg's 2xx).
	offer := sdpBody(req)
	if offer != nil {
		sdp, err := b.offer(ctx, c, c.a, offer)
		if err != nil {
			b.m.call(origin, resultFailed).Inc()
			b.rejectMedia(tx, req, c, err)
			return nil, nil, false
		}
		breq.AppendHeader(b.sdpType())
		breq.SetBody(sdp)
	} else {
		breq.SetBody(nil)
	}
	breq.SetTransport(bl.transport)
	breq.SetDestination(bl.dest)
	return c, breq, true
}

// bLegDest decides where the B-leg goes: the PBX for a phone's call, the
// registered phone for the PBX's, and fills in bl. It answers req itself
// and returns false when the call cannot go anywhere.
func (b *B2BUA) bLegDest(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, trusted bool, origin string, bl *leg) (sip.Uri, bool) {
	bl.name, bl.localTag = "b", newTag()
	target := req.Recipient // bLegInvite's NewRequest copies its parameters
	if !trusted {
		if b.pbxDown.Load() {
			b.m.call(origin, resultFailed).Inc()
			b.respond(tx, req, 503, "Service Unavailable", b.retryAfter(), pbxDownWarning)
			return sip.Uri{}, false
		}
		bl.client, bl.contact, _ = b.clientFor(b.pbx.transport)
		bl.dest, bl.transport = b.pbx.hostport, b.pbx.transport
	} else {
		bd, code, reason := b.route(ctx, req.Recipient)
		if code != 0 {
			b.m.call(origin, resultRejected).Inc()
			b.respond(tx, req, code, reason)
			return sip.Uri{}, false
		}
		// Parsed over a copy of the Request-URI, as ever: what the
		// contact leaves out stays the Request-URI's. (A variable of
		// its own: its address escapes, and target's would put target
		// on the heap on every call.)
		parsed := *req.Recipient.Clone()
		if sip.ParseUri(bd.Contact, &parsed) != nil {
			b.respond(tx, req, 480, "Temporarily Unavailable")
			return sip.Uri{}, false
		}
		target = parsed
		var ok bool
		bl.client, bl.contact, ok = b.clientFor(bd.Transport)
		if !ok {
			b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
			return sip.Uri{}, false
		}
		bl.dest, bl.transport = bd.Source, strings.ToUpper(bd.Transport)
	}
	return target, true
}

// callLegs is a call and its two legs, allocated at once.
type callLegs struct {
	c    call
	a, b leg
}

// newCallLegs builds the call and its A-leg in cl around its B-leg, or
// answers req 500 and returns nil.
func (b *B2BUA) newCallLegs(req *sip.Request, tx sip.ServerTransaction, origin string, contact *sip.ContactHeader, cl *callLegs) *call {
	from, to, callid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	c, al, bl := &cl.c, &cl.a, &cl.b
	*c = call{id: callid.Value(), fromPBX: origin == "pbx", start: time.Now(), done: make(chan struct{})}
	*al = leg{name: "a", call: c, localTag: newTag(), callID: callid.Value(),
		remoteTag: tagOf(from.Params), local: *to.Address.Clone(), localName: to.DisplayName,
		remote: *from.Address.Clone(), target: *contact.Address.Clone(),
		routes: routeSet(headersNamed(req, "Record-Route")), dest: req.Source(), transport: req.Transport(),
		remoteSeq: cseq.SeqNo, invite: req, inviteTx: tx, ackCh: make(chan *sip.Request, 4)}
	al.client, al.contact, _ = b.clientFor(req.Transport())
	if al.client == nil {
		b.respond(tx, req, 500, "Server Internal Error")
		return nil
	}
	bl.call, c.a, c.b = c, al, bl
	c.mediaID = c.id + "/" + al.localTag
	c.logger = b.log
	return c
}

// bLegInvite builds the B-leg INVITE (without identity and body) and
// returns it with its From header.
func (b *B2BUA) bLegInvite(req *sip.Request, bl *leg, target sip.Uri, trusted bool, authAOR string, mf sip.MaxForwardsHeader) (*sip.Request, *sip.FromHeader) {
	from, to, callid, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	bl.callID = b.bLegCallID(callid.Value())
	bl.local, bl.localName = *from.Address.Clone(), from.DisplayName
	bl.remote, bl.target = *to.Address.Clone(), target
	bl.cseq = cseq.SeqNo
	breq := sip.NewRequest(sip.INVITE, target)
	bfrom := &sip.FromHeader{DisplayName: from.DisplayName, Address: bl.local, Params: sip.HeaderParams{{K: "tag", V: bl.localTag}}}
	bto := &sip.ToHeader{DisplayName: to.DisplayName, Address: bl.remote, Params: sip.HeaderParams{}}
	bcid := sip.CallIDHeader(bl.callID)
	breq.AppendHeader(bfrom)
	breq.AppendHeader(bto)
	breq.AppendHeader(&bcid)
	breq.AppendHeader(&sip.CSeqHeader{SeqNo: cseq.SeqNo, MethodName: sip.INVITE})
	breq.AppendHeader(&mf)
	breq.AppendHeader(bl.contact) // shared, read-only
	copyHeaders(req, breq, inviteHeaders...)
	if trusted {
		copyHeaders(req, breq, trustedInviteHeaders...)
	}
	if supported := filterSupported(headersNamed(req, "Supported")); supported != "" {
		breq.AppendHeader(sip.NewHeader("Supported", supported))
	}
	if !trusted && b.cfg.Auth != "local" {
		// Passthrough: the PBX authenticates the phone's INVITE.
		copyHeaders(req, breq, "Authorization", "Proxy-Authorization")
	}
	if authAOR != "" {
		breq.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<"+authAOR+">"))
	}
	return breq, bfrom
}

// bridgeInvite sends the B-leg INVITE, relays its responses to the A-leg
// and returns once the A-leg has its final response (and, for a 2xx, its
// ACK or the give-up time).
func (b *B2BUA) bridgeInvite(ctx context.Context, c *call, req *sip.Request, tx sip.ServerTransaction, breq *sip.Request) {
	bl := c.b
	cancelled := make(chan struct{})
	c.cancelled = cancelled
	tx.OnCancel(c.onCancel)

	bl.reack = &reAck{client: bl.client, sent: b.m.request(sip.ACK, "out")}
	b.m.request(sip.INVITE, "out").Inc()
	btx, err := bl.client.TransactionRequest(ctx, breq)
	if err != nil {
		c.log().Warn("invite to b-leg failed", "peer", bl.dest, "err", err)
		b.respondA(c, 503, "Service Unavailable", nil, nil, b.retryAfter())
		b.endCall(c, nil, resultFailed, 503, "")
		return
	}
	bl.mu.Lock()
	bl.invite = breq
	bl.mu.Unlock()
	defer btx.Terminate()
	// The B-leg's 2xx retransmissions (our ACK lost) are ACKed again.
	btx.OnRetransmission(bl.reack.onRetransmission)

	ring := time.NewTimer(b.cfg.RingTimeout)
	defer ring.Stop()
	cancelSent := false
	sendCancel := func() {
		if !cancelSent {
			cancelSent = true
			go b.cancelInvite(bl, breq)
		}
	}
	for {
		select {
		case res := <-btx.Responses():
			b.m.response(res.StatusCode, "in").Inc()
			switch {
			case res.StatusCode == 100:
			case res.IsProvisional():
				if cancelSent {
					continue
				}
				b.relayProvisional(ctx, c, res)
			case res.IsSuccess():
				b.bAnswered(ctx, c, breq, res, cancelSent, ring)
				return
			default:
				if cancelSent {
					// 487 to our CANCEL: the A-leg already has its 487.
					b.endCall(c, nil, resultCancelled, 487, "")
					return
				}
				b.respondA(c, res.StatusCode, res.Reason, res, nil)
				b.endCall(c, nil, resultFor(res.StatusCode), res.StatusCode, "")
				return
			}
		case <-cancelled:
			// sipgo answered the CANCEL and the INVITE with 487 already.
			cancelled = nil
			c.log().Debug("caller cancelled")
			sendCancel()
		case <-ring.C:
			c.log().Info("no answer within ring_timeout", "ring_timeout", b.cfg.RingTimeout)
			b.respondA(c, 408, "Request Timeout", nil, nil)
			sendCancel()
			cancelled = nil
		case <-btx.Done():
			err := btx.Err()
			code, reason := 503, "Service Unavailable"
			if errors.Is(err, sip.ErrTransactionTimeout) {
				code, reason = 408, "Request Timeout"
			}
			if cancelSent {
				b.endCall(c, nil, resultCancelled, 487, "")
				return
			}
			c.log().Warn("b-leg invite failed", "peer", bl.dest, "err", err)
			if !c.fromPBX {
				b.pbxTimedOut(err)
			}
			b.respondA(c, code, reason, nil, nil)
			b.endCall(c, nil, resultFailed, code, "")
			return
		}
	}
}

// origin is the call's origin label: phone or pbx.
func (c *call) origin() string {
	if c.fromPBX {
		return "pbx"
	}
	return "phone"
}

// log returns the call's logger (call_id on every line); built when
// used, so that the call does not carry the Call-ID twice.
func (c *call) log() callLog { return callLog{c.logger, c.id} }

// onCancel is the A-leg INVITE transaction's CANCEL callback.
func (c *call) onCancel(*sip.Request) { c.cancelOnce.Do(func() { close(c.cancelled) }) }

// relayProvisional relays a 18x of the B-leg to the A-leg, with early
// media anchored.
func (b *B2BUA) relayProvisional(ctx context.Context, c *call, res *sip.Response) {
	var body []byte
	if sdp := sdpBody(res); sdp != nil {
		var err error
		if c.anchored.Load() {
			body, err = b.answer(ctx, c, c.b, sdp)
		} else if b.cfg.Media == nil {
			body = sdp
		}
		if err != nil {
			c.log().Info("early media sdp refused", "err", err)
			body = nil
		}
	}
	b.respondA(c, res.StatusCode, res.Reason, res, body)
}

// bAnswered handles the B-leg's 2xx: dialog state, ACK, media answer, 200
// to the A-leg and the wait for the A-leg's ACK.
// ring is bridgeInvite's ring timer, reused for the 2xx retransmissions.
func (b *B2BUA) bAnswered(ctx context.Context, c *call, breq *sip.Request, res *sip.Response, cancelSent bool, ring *time.Timer) {
	al, bl := c.a, c.b
	bl.mu.Lock()
	bl.remoteTag = tagOf(res.To().Params)
	if ct, ok := responseContact(res); ok {
		bl.target = ct
	}
	rr := routeSet(headersNamed(res, "Record-Route"))
	slices.Reverse(rr)
	bl.routes = rr
	bl.confirmed = true
	bl.mu.Unlock()
	b.addDialog(bl)
	seq := breq.CSeq().SeqNo

	if cancelSent || al.inviteTx == nil || isDone(al.inviteTx) {
		// The CANCEL/200 race: the B-leg answered after the caller left.
		bl.reack.req.Store(b.ack(bl, seq, nil))
		b.endCall(c, nil, resultCancelled, 487, "")
		return
	}
	c.mu.Lock()
	c.answered = true
	c.mu.Unlock()

	// Media. Early offer (the A-leg INVITE had SDP): the 2xx answers, ACK
	// the B-leg now. Late offer: the 2xx offers, the A-leg's ACK answers,
	// and the B-leg's ACK carries that answer.
	early := sdpBody(al.invite) != nil
	sdp := sdpBody(res)
	body := sdp
	var err error
	switch {
	case sdp != nil && early:
		body, err = b.answer(ctx, c, bl, sdp)
	case sdp != nil:
		body, err = b.offer(ctx, c, bl, sdp)
	}
	if err != nil {
		c.log().Warn("b-leg sdp refused", "err", err)
		bl.reack.req.Store(b.ack(bl, seq, nil))
		b.respondA(c, 488, "Not Acceptable Here", nil, nil)
		b.endCall(c, nil, resultFailed, 488, `SIP;cause=488;text="bad sdp"`)
		return
	}
	lateOffer := !early && sdp != nil
	if !lateOffer {
		bl.reack.req.Store(b.ack(bl, seq, nil))
	}

	// The A-leg's dialog is in the table since addCall.
	al.mu.Lock()
	al.confirmed = true
	al.mu.Unlock()
	c.log().Debug("call answered", "code", res.StatusCode)
	ack := b.respond2xxTimer(c, al, al.inviteTx, al.invite, res, body, ring)
	if ack == nil {
		select {
		case <-c.done: // ended meanwhile (BYE, timeout)
			return
		default:
		}
		c.log().Warn("no ACK from a-leg")
		if lateOffer {
			bl.reack.req.Store(b.ack(bl, seq, nil))
		}
		b.endCall(c, nil, resultAnswered, 200, `SIP;cause=408;text="no ACK"`)
		return
	}
	if lateOffer {
		var abody []byte
		if asdp := sdpBody(ack); asdp != nil {
			if abody, err = b.answer(ctx, c, al, asdp); err != nil {
				c.log().Warn("a-leg answer in ACK refused", "err", err)
			}
		}
		bl.reack.req.Store(b.ack(bl, seq, abody))
	}
}

// respond2xx sends a 2xx for req on the A side of a leg pair and
// retransmits it (unreliable transports) until the ACK arrives, through
// the transport once the transaction is gone; it returns the ACK, or nil
// after 64*T1 without one.
func (b *B2BUA) respond2xx(c *call, l *leg, tx sip.ServerTransaction, req *sip.Request, bres *sip.Response, body []byte) *sip.Request {
	return b.respond2xxTimer(c, l, tx, req, bres, body, nil)
}

// respond2xxTimer is respond2xx with a timer of the caller's to use (nil:
// its own); it stops t.
func (b *B2BUA) respond2xxTimer(c *call, l *leg, tx sip.ServerTransaction, req *sip.Request, bres *sip.Response, body []byte, t *time.Timer) *sip.Request {
	res := b.responseFor(l, req, bres.StatusCode, bres.Reason, bres, body)
	// The leg's ACK channel, made on first use (a B-leg needs one only
	// when the PBX re-INVITEs).
	l.mu.Lock()
	if l.ackCh == nil {
		l.ackCh = make(chan *sip.Request, 4)
	}
	ackCh := l.ackCh
	l.mu.Unlock()
	// Drain stale ACKs of an earlier exchange.
	for len(ackCh) > 0 {
		<-ackCh
	}
	seq := req.CSeq().SeqNo
	if err := tx.Respond(res); err != nil {
		c.log().Debug("respond 2xx failed", "err", err)
	}
	b.m.response(res.StatusCode, "out").Inc()
	// One timer for the retransmissions (unreliable transports: T1,
	// doubling up to T2) and the give-up at 64*T1.
	giveUp := time.Now().Add(64 * sip.T1)
	reliable := sip.IsReliable(req.Transport())
	interval := sip.T1
	first := interval
	if reliable {
		first = 64 * sip.T1
	}
	if t == nil {
		t = time.NewTimer(first)
	} else {
		t.Reset(first) // no stale value stays in t.C (Go 1.23 timers)
	}
	defer t.Stop()
	for {
		select {
		case ack := <-ackCh:
			if ack.CSeq().SeqNo == seq {
				return ack
			}
		case <-t.C:
			left := time.Until(giveUp)
			if reliable || left <= 0 {
				return nil
			}
			if err := tx.Respond(res); err != nil {
				// The transaction has ended (sip.accepted_linger): the
				// 2xx is ours to retransmit (RFC 3261 13.3.1.4), to the
				// transport as the Via says.
				b.writeResponse(res)
			}
			interval = min(2*interval, sip.T2)
			t.Reset(min(interval, left))
		case <-c.done:
			return nil
		}
	}
}

// respondA answers the A-leg's INVITE (non-2xx or provisional), copying
// the whitelisted headers of the B-leg response bres when given.
func (b *B2BUA) respondA(c *call, code int, reason string, bres *sip.Response, body []byte, extra ...sip.Header) {
	res := b.responseFor(c.a, c.a.invite, code, reason, bres, body)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	if err := c.a.inviteTx.Respond(res); err != nil {
		c.log().Debug("respond failed", "status", code, "err", err)
		return
	}
	b.m.response(code, "out").Inc()
}

// responseFor builds our response on leg l to req from a peer response.
func (b *B2BUA) responseFor(l *leg, req *sip.Request, code int, reason string, bres *sip.Response, body []byte) *sip.Response {
	res := l.newResponse(req, code, reason)
	if code > 100 && code < 300 && l.contact != nil {
		res.AppendHeader(l.contact) // shared, read-only
	}
	if bres != nil {
		copyHeaders(bres, res, responseHeaders...)
		if code >= 300 && code < 400 {
			for _, h := range headersNamed(bres, "Contact") {
				res.AppendHeader(sip.HeaderClone(h))
			}
		}
		if s := filterSupported(headersNamed(bres, "Supported")); s != "" {
			res.AppendHeader(sip.NewHeader("Supported", s))
		}
	}
	if headerNamed(res, "Server") == nil {
		res.AppendHeader(b.serverHeader())
	}
	if body != nil {
		res.AppendHeader(b.sdpType())
	}
	res.SetBody(body)
	return res
}

// newResponse starts our response on leg l to req: sipgo's
// NewResponseFromRequest with our To tag. For the leg's initial INVITE,
// once a first response (101-299) was built that way, the next ones
// start from what it derived (responseBase): the request's headers are
// not looked up again (sipgo lower-cases every header name of the request
// for each look-up), nor a random To tag made only to be replaced.
func (l *leg) newResponse(req *sip.Request, code int, reason string) *sip.Response {
	var initial bool
	if code > 100 {
		l.mu.Lock()
		initial = req == l.invite
		base := l.resBase
		l.mu.Unlock()
		if initial && base != nil {
			return base.response(code, reason)
		}
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); to != nil && code > 100 {
		to.Params.Remove("tag")
		to.Params.Add("tag", l.localTag)
	}
	if initial && code < 300 {
		hs := res.Headers()
		base := &responseBase{version: res.SipVersion, transport: res.Transport(), dest: res.Destination(),
			rest: make([]sip.Header, 0, len(hs))}
		for _, h := range hs {
			switch name := h.Name(); {
			case nameIs(name, "Record-Route"):
				base.rr = append(base.rr, h)
			case nameIs(name, "Content-Length"):
			default:
				base.rest = append(base.rest, h)
			}
		}
		l.mu.Lock()
		l.resBase = base
		l.mu.Unlock()
	}
	return res
}

// responseBase is what NewResponseFromRequest derived from a leg's initial
// INVITE for a first response 101-299, our To tag included: its
// Record-Route copies, and the copies of Via, From, To, Call-ID and CSeq
// (in rest). The header objects are shared by the responses made from it:
// read-only.
type responseBase struct {
	version         string
	rr, rest        []sip.Header
	transport, dest string
}

// response is NewResponseFromRequest(invite, code, reason, nil) with our
// To tag, for code > 100: the same headers in the same order (Record-Route
// for 101-299 only, as for any INVITE), Content-Length, transport and
// destination.
func (r *responseBase) response(code int, reason string) *sip.Response {
	res := sip.NewResponse(code, reason)
	res.SipVersion = r.version
	if code < 300 {
		for _, h := range r.rr {
			res.AppendHeader(h)
		}
	}
	for _, h := range r.rest {
		res.AppendHeader(h)
	}
	res.SetBody(nil)
	res.SetTransport(r.transport)
	res.SetDestination(r.dest)
	return res
}

// rejectMedia answers a relay error on the A-leg's offer.
func (b *B2BUA) rejectMedia(tx sip.ServerTransaction, req *sip.Request, c *call, err error) {
	switch {
	case errors.Is(err, rtprelay.ErrBadSDP):
		c.log().Info("sdp refused", "err", err)
		b.respond(tx, req, 488, "Not Acceptable Here", sip.NewHeader("Warning", `399 cusax-gw "unparseable SDP"`))
	case errors.Is(err, rtprelay.ErrNoPorts):
		c.log().Warn("no rtp ports", "err", err)
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
	default:
		c.log().Error("media anchoring failed", "err", err)
		b.respond(tx, req, 503, "Service Unavailable", b.retryAfter())
	}
}

// offer and answer anchor SDP through the media relay (passthrough
// without one).
func (b *B2BUA) offer(ctx context.Context, c *call, from *leg, sdp []byte) ([]byte, error) {
	if b.cfg.Media == nil {
		return sdp, nil
	}
	out, err := b.cfg.Media.Offer(ctx, c.mediaID, from.name, sdp)
	if err == nil {
		c.anchored.Store(true)
	}
	return out, err
}

func (b *B2BUA) answer(ctx context.Context, c *call, from *leg, sdp []byte) ([]byte, error) {
	if b.cfg.Media == nil {
		return sdp, nil
	}
	return b.cfg.Media.Answer(ctx, c.mediaID, from.name, sdp)
}

// endCall is the one teardown path: it runs once per call, releases the
// media, BYEs the confirmed legs other than by (the leg whose BYE ended
// the call) and records the result.
func (b *B2BUA) endCall(c *call, by *leg, result string, code int, reason string) {
	c.endOnce.Do(func() {
		close(c.done)
		if c.maxTimer != nil {
			c.maxTimer.Stop()
		}
		c.mu.Lock()
		if c.answered {
			result = resultAnswered
		}
		c.mu.Unlock()
		// The media first, as Kamailio configurations call
		// rtpengine_delete on BYE: one leg has hung up, and the ports are
		// free again one round trip of BYE sooner (under load that is
		// most of a call's descriptors).
		if c.anchored.Load() {
			if err := b.cfg.Media.Delete(c.mediaID); err != nil && !errors.Is(err, rtprelay.ErrNotFound) {
				c.log().Warn("media delete failed", "err", err)
			}
		}
		// BYE the confirmed legs other than by, both at once; usually one
		// (the other leg hung up), sent from this goroutine.
		var bye [2]*leg
		n := 0
		for _, l := range []*leg{c.a, c.b} {
			l.mu.Lock()
			confirmed := l.confirmed
			l.mu.Unlock()
			if l != by && confirmed {
				bye[n] = l
				n++
			}
		}
		if n == 2 {
			var wg sync.WaitGroup
			wg.Go(func() { b.bye(bye[1], reason) })
			b.bye(bye[0], reason)
			wg.Wait()
		} else if n == 1 {
			b.bye(bye[0], reason)
		}
		b.m.call(c.origin(), result).Inc()
		c.log().callEnd(result, code, time.Since(c.start))
		b.removeCall(c) // last: wakes Drain
	})
}

// OnMediaTimeout ends the call whose media relay key is mediaID (the relay's
// media timeout): BYE on both legs.
func (b *B2BUA) OnMediaTimeout(mediaID string) {
	b.callsMu.Lock()
	c := b.calls[mediaID]
	b.callsMu.Unlock()
	if c == nil {
		return
	}
	c.log().Info("media timeout")
	b.endCall(c, nil, resultFailed, 0, `SIP;cause=408;text="media timeout"`)
}

// route finds the phone binding a call from the PBX goes to.
func (b *B2BUA) route(ctx context.Context, ruri sip.Uri) (Binding, int, string) {
	if strings.HasPrefix(ruri.User, tokenPrefix) {
		bd, err := b.bindingByToken(ctx, ruri.User)
		if err == nil {
			return bd, 0, ""
		}
		if errors.Is(err, ErrNotFound) {
			return Binding{}, 480, "Temporarily Unavailable"
		}
		return Binding{}, 503, "Service Unavailable"
	}
	bs, err := b.bindingsByAOR(ctx, aorOf(ruri))
	if err != nil {
		return Binding{}, 503, "Service Unavailable"
	}
	if len(bs) == 0 {
		return Binding{}, 404, "Not Found"
	}
	// No forking: the most recently refreshed binding.
	best := bs[0]
	for _, bd := range bs[1:] {
		if bd.Expires.After(best.Expires) {
			best = bd
		}
	}
	return best, 0, ""
}

// bLegCallID derives the B-leg Call-ID from the A-leg's, so that an
// INVITE resent after a challenge keeps its Call-ID toward the PBX.
func (b *B2BUA) bLegCallID(a string) string {
	m := b.callMAC.Get().(*callMAC)
	m.h.Reset()
	m.in = append(m.in[:0], a...)
	m.h.Write(m.in)
	sum := m.h.Sum(m.sum[:0])
	var out [2 + 32]byte
	copy(out[:], "cx")
	hex.Encode(out[2:], sum[:16])
	b.callMAC.Put(m)
	return string(out[:])
}

// callMAC is bLegCallID's reusable state: the HMAC and the buffers it
// reads and writes (passed through hash.Hash's methods, a []byte(string)
// and a sum on the stack both escaped: two allocations per call).
type callMAC struct {
	h   hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// identify applies CONTRACT.md's identity rules to the B-leg INVITE: strip
// impp claims from untrusted sources, stamp the caller's JID, keep a
// trusted peer's claim only when nothing resolves.
func (b *B2BUA) identify(c *call, req, breq *sip.Request, trusted bool, authAOR string, bfrom *sip.FromHeader) {
	claims, removed := stripImpp(breq)
	xmppContacts := 0
	for _, h := range req.Headers() {
		if !nameIs(h.Name(), "Contact") {
			continue
		}
		if ch, ok := h.(*sip.ContactHeader); ok && strings.EqualFold(ch.Address.Scheme, "xmpp") {
			xmppContacts++
		}
	}
	if !trusted && removed+xmppContacts > 0 {
		b.m.callInfo("stripped").Add(float64(removed + xmppContacts))
		c.logStrip(removed + xmppContacts)
	}
	var jid, name string
	var ok bool
	if b.cfg.Resolver != nil {
		var buf [4]string
		for _, uri := range appendCallerURIs(buf[:0], req, trusted, authAOR) {
			if jid, name, ok = b.cfg.Resolver.Resolve(uri); ok {
				break
			}
		}
	}
	switch {
	case b.cfg.CallInfo == "off":
		if trusted {
			for _, j := range claims {
				b.stampImpp(breq, j)
			}
		}
		return
	case ok:
		b.stampImpp(breq, jid)
		b.m.callInfo("stamped").Inc()
		if bfrom.DisplayName == "" && name != "" {
			bfrom.DisplayName = name
		}
	case trusted && len(claims) > 0:
		jid = claims[0]
		b.stampImpp(breq, jid)
		b.m.callInfo("kept").Inc()
	default:
		return
	}
	if b.cfg.XMPPContact {
		addXMPPContact(breq, jid)
	}
}

func (c *call) logStrip(n int) {
	c.log().Info("impp claims stripped from untrusted source", "count", n)
}

// callerURIs lists the URIs that identify the caller, best first: the
// authenticated AOR (local auth), P-Asserted-Identity values from a trusted
// peer, then From.
func callerURIs(req *sip.Request, trusted bool, authAOR string) []string {
	return appendCallerURIs(nil, req, trusted, authAOR)
}

// appendCallerURIs appends callerURIs to out.
func appendCallerURIs(out []string, req *sip.Request, trusted bool, authAOR string) []string {
	if authAOR != "" {
		return append(out, authAOR)
	}
	if trusted {
		for _, h := range headersNamed(req, "P-Asserted-Identity") {
			for _, v := range splitList(h.Value()) {
				if u := uriOf(v); u != "" {
					out = append(out, u)
				}
			}
		}
	}
	if f := req.From(); f != nil {
		out = append(out, f.Address.String())
	}
	return out
}

// uriOf extracts the URI of a name-addr or addr-spec value.
func uriOf(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return ""
		}
		return strings.TrimSpace(v[i+1 : i+j])
	}
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return v
}

// filterSupported joins the option tags of Supported headers minus the
// extensions the gateway does not implement.
func filterSupported(hs []sip.Header) string {
	var keep []string
	for _, h := range hs {
		for _, tag := range strings.Split(h.Value(), ",") {
			if t := strings.TrimSpace(tag); t != "" && !unsupportedExtension(t) {
				keep = append(keep, t)
			}
		}
	}
	return strings.Join(keep, ", ")
}

// sdpBody returns the message's SDP body, or nil.
func sdpBody(m interface {
	Body() []byte
	Headers() []sip.Header
}) []byte {
	if m == nil {
		return nil
	}
	body := m.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if ct := headerNamed(m, "Content-Type"); ct != nil {
		v := strings.ToLower(strings.TrimSpace(ct.Value()))
		if i := strings.IndexByte(v, ';'); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		if v != "application/sdp" {
			return nil
		}
	}
	return body
}

func tagOf(p sip.HeaderParams) string {
	t, _ := p.Get("tag")
	return t
}

// responseContact returns the SIP Contact URI of a response.
func responseContact(res *sip.Response) (sip.Uri, bool) {
	for _, h := range res.Headers() {
		if !nameIs(h.Name(), "Contact") {
			continue
		}
		if c, ok := h.(*sip.ContactHeader); ok && (strings.EqualFold(c.Address.Scheme, "sip") || strings.EqualFold(c.Address.Scheme, "sips")) {
			return *c.Address.Clone(), true
		}
	}
	return sip.Uri{}, false
}

func isDone(tx sip.Transaction) bool {
	select {
	case <-tx.Done():
		return true
	default:
		return false
	}
}

// resultFor maps a final B-leg status to cusax_calls_total's result.
func resultFor(code int) string {
	switch {
	case code == 487:
		return resultCancelled
	case code == 408 || code >= 500 && code < 600 && code != 503 && code != 600:
		return resultFailed
	default:
		return resultRejected
	}
}

// Call table and admission.

// admit reserves a call slot, or returns the limit that refused it.
func (b *B2BUA) admit() string {
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	if b.cfg.MaxCalls > 0 && b.pending+len(b.calls) >= b.cfg.MaxCalls {
		return "max_calls"
	}
	if !b.cps.allow(b.cfg.Now()) {
		return "max_cps"
	}
	b.pending++
	return ""
}

// release gives back a slot admit reserved for a call that never started.
func (b *B2BUA) release() {
	b.callsMu.Lock()
	b.pending--
	b.signalIdleLocked()
	b.callsMu.Unlock()
}

// signalIdleLocked wakes Drain when no call is left.
func (b *B2BUA) signalIdleLocked() {
	if b.pending+len(b.calls) == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

func (b *B2BUA) addCall(c *call) {
	b.callsMu.Lock()
	b.pending--
	b.calls[c.mediaID] = c
	b.outCallIDs[c.b.callID]++
	b.initial[c.init] = c.branch
	b.dialogs[c.a.key()] = c.a
	b.callsMu.Unlock()
	b.m.CallsActive.Inc()
}

func (b *B2BUA) removeCall(c *call) {
	b.callsMu.Lock()
	delete(b.calls, c.mediaID)
	delete(b.initial, c.init)
	b.ended.add(c.init, c.branch, time.Now())
	if n := b.outCallIDs[c.b.callID] - 1; n > 0 {
		b.outCallIDs[c.b.callID] = n
	} else {
		delete(b.outCallIDs, c.b.callID)
	}
	delete(b.dialogs, c.a.key())
	if c.b.localTag != "" {
		delete(b.dialogs, c.b.key())
	}
	b.m.CallsActive.Dec()
	b.signalIdleLocked()
	b.callsMu.Unlock()
}

func (b *B2BUA) addDialog(l *leg) {
	b.callsMu.Lock()
	if _, live := b.calls[l.call.mediaID]; live {
		b.dialogs[l.key()] = l
	}
	b.callsMu.Unlock()
}

// dialogFor finds the leg of an in-dialog request.
func (b *B2BUA) dialogFor(req *sip.Request) *leg {
	callid, to := req.CallID(), req.To()
	if callid == nil || to == nil {
		return nil
	}
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	return b.dialogs[dialogKey(callid.Value(), tagOf(to.Params))]
}

// ActiveCalls returns the number of calls in progress.
func (b *B2BUA) ActiveCalls() int {
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	return len(b.calls)
}

// hangupAll ends every call (BYE on both legs).
func (b *B2BUA) hangupAll(reason string) {
	var wg sync.WaitGroup
	for _, c := range b.callsSnapshot() {
		wg.Go(func() { b.endCall(c, nil, resultAnswered, 0, reason) })
	}
	wg.Wait()
}

// isOwnCallID reports whether callID is the Call-ID of one of our B-legs.
// initialKey identifies a call's initial INVITE: Call-ID, From tag and
// CSeq number (RFC 3261 8.2.2.2).
type initialKey struct {
	callID, fromTag string
	seq             uint32
}

// initialBranch reports whether k is the initial INVITE of a call in
// progress or of one that ended less than sip.transaction_linger ago, and
// the top Via branch it came with.
func (b *B2BUA) initialBranch(k initialKey) (string, bool) {
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	if branch, ok := b.initial[k]; ok {
		return branch, true
	}
	return b.ended.get(k, time.Now())
}

// recentInvites remembers the initial INVITEs of ended calls (key → top
// Via branch) for at least keep and less than twice keep, in two
// generations: a new one starts when the current one is keep old, and the
// one before is dropped whole. A few hundred bytes per call instead of
// the whole transaction sipgo's Timer L would keep. Guarded by callsMu.
type recentInvites struct {
	keep      time.Duration
	cur, prev map[initialKey]string
	since     time.Time // when cur started
}

func (r *recentInvites) add(k initialKey, branch string, now time.Time) {
	if r.cur == nil || now.Sub(r.since) >= r.keep {
		if now.Sub(r.since) >= 2*r.keep {
			r.cur = nil // cur is past keep too: nothing to carry over
		}
		r.prev, r.cur, r.since = r.cur, make(map[initialKey]string, len(r.cur)), now
	}
	r.cur[k] = branch
}

func (r *recentInvites) get(k initialKey, now time.Time) (string, bool) {
	age := now.Sub(r.since)
	if r.cur == nil || age >= 2*r.keep {
		return "", false
	}
	if branch, ok := r.cur[k]; ok {
		return branch, true
	}
	if age >= r.keep {
		return "", false // prev is older than twice keep
	}
	branch, ok := r.prev[k]
	return branch, ok
}

// topBranch is the branch parameter of req's top Via ("" without one).
func topBranch(req *sip.Request) string {
	if v := req.Via(); v != nil {
		if branch, ok := v.Params.Get("branch"); ok {
			return branch
		}
	}
	return ""
}

func (b *B2BUA) isOwnCallID(callID string) bool {
	if len(callID) != 2+32 || !strings.HasPrefix(callID, "cx") {
		return false // not the form bLegCallID gives: no look-up
	}
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	return b.outCallIDs[callID] > 0
}

// callsSnapshot returns the calls in progress.
func (b *B2BUA) callsSnapshot() []*call {
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	out := make([]*call, 0, len(b.calls))
	for _, c := range b.calls {
		out = append(out, c)
	}
	return out
}
