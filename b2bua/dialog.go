package b2bua

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// A leg is one of the two dialogs of a bridged call, as the gateway sees
// it: the A-leg, where the gateway is the UAS (the incoming INVITE), or
// the B-leg, where it is the UAC (the INVITE it sent). Requests the
// gateway sends inside the dialog are built here (RFC 3261 section 12.2.1);
// every one goes to the leg's fixed next hop (dest over transport): for a
// phone its source address (NAT), for the PBX the configured sip.pbx.
type leg struct {
	call *call
	name string // "a" (the gateway answered its INVITE) or "b": also the leg's tag toward the media relay

	client    *sipgo.Client
	dest      string // host:port every request of the leg is sent to
	transport string // UDP, TCP, TLS, WS, WSS

	callID    string
	localTag  string
	remoteTag string
	local     sip.Uri // our From URI in requests we send
	localName string
	remote    sip.Uri // their URI (our To in requests we send)
	target    sip.Uri // their Contact: the Request-URI of our requests
	routes    []sip.Uri
	contact   *sip.ContactHeader // ours, shared by the calls on its transport and their messages: read-only

	mu        sync.Mutex
	cseq      uint32 // last CSeq we sent
	remoteSeq uint32 // last CSeq they sent
	invite    *sip.Request
	inviteTx  sip.ServerTransaction // A-leg: the initial INVITE
	ackCh     chan *sip.Request     // ACKs of our 2xx: the A-leg's made with it, a B-leg's by respond2xx
	confirmed bool                  // a 2xx was sent/received and ACKed/ACKed
	reack     *reAck                // B-leg: ACKs the initial INVITE's 2xx retransmissions
	resBase   *responseBase         // A-leg: the start of our responses to the initial INVITE
}

// reAck sends the ACK of a B-leg INVITE's 2xx again when the 2xx comes
// again (our ACK was lost). sipgo keeps the client transaction, and so
// this callback, for Timer M (32 s) after the 2xx, beyond the end of most
// calls: it holds the ACK, not the call (capturing the leg kept every
// call's legs, requests and responses in memory for 32 s).
type reAck struct {
	client *sipgo.Client
	sent   prometheus.Counter
	req    atomic.Pointer[sip.Request] // the ACK sent; nil before
}

func (r *reAck) onRetransmission(res *sip.Response) {
	if req := r.req.Load(); req != nil && res.IsSuccess() {
		r.sent.Inc()
		r.client.WriteRequest(req)
	}
}

// key is the dialog's key in the gateway's table: Call-ID and our tag,
// which is the To tag of every request the peer sends inside the dialog.
func (l *leg) key() dialogID { return dialogKey(l.callID, l.localTag) }

// dialogID identifies a dialog of the gateway: Call-ID and our tag (a
// struct key: building a string key cost an allocation per look-up).
type dialogID struct{ callID, localTag string }

func dialogKey(callID, localTag string) dialogID { return dialogID{callID, localTag} }

// newTag returns a random tag (RFC 3261 section 19.3: 32 bits of
// randomness at least).
func newTag() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// other returns the leg's peer leg.
func (l *leg) other() *leg {
	if l == l.call.a {
		return l.call.b
	}
	return l.call.a
}

// request builds an in-dialog request (RFC 3261 section 12.2.1.1).
func (l *leg) request(method sip.RequestMethod) *sip.Request {
	// NewRequest copies the target's parameters and headers itself. The
	// From and To URIs share theirs with the leg, which never changes
	// them after the dialog is set up (nor does anything change a
	// request's From or To URI once built).
	req := sip.NewRequest(method, l.target)
	for _, r := range l.routes {
		req.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	from := &sip.FromHeader{DisplayName: l.localName, Address: l.local, Params: sip.HeaderParams{{K: "tag", V: l.localTag}}}
	to := &sip.ToHeader{Address: l.remote, Params: sip.HeaderParams{}} // no allocation
	if l.remoteTag != "" {
		to.Params = sip.HeaderParams{{K: "tag", V: l.remoteTag}}
	}
	callid := sip.CallIDHeader(l.callID)
	l.mu.Lock()
	if method != sip.ACK && method != sip.CANCEL {
		l.cseq++
	}
	seq := l.cseq
	l.mu.Unlock()
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&callid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.AppendHeader(&mf)
	if method != sip.BYE && method != sip.CANCEL && method != sip.ACK && l.contact != nil {
		req.AppendHeader(l.contact) // shared, read-only
	}
	req.SetTransport(l.transport)
	req.SetDestination(l.dest)
	return req
}

// send sends an in-dialog request (not ACK) and returns its transaction.
func (b *B2BUA) send(ctx context.Context, l *leg, req *sip.Request) (sip.ClientTransaction, error) {
	b.m.request(req.Method, "out").Inc()
	return l.client.TransactionRequest(ctx, req)
}

// finalResponse waits for the final response of tx.
func (b *B2BUA) finalResponse(ctx context.Context, tx sip.ClientTransaction) (*sip.Response, error) {
	return b.finalResponseBy(ctx, tx, nil)
}

// finalResponseBy is finalResponse that also gives up, with
// context.DeadlineExceeded, when expire fires.
func (b *B2BUA) finalResponseBy(ctx context.Context, tx sip.ClientTransaction, expire <-chan time.Time) (*sip.Response, error) {
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
			return nil, errors.New("transaction ended without a final response")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-expire:
			return nil, context.DeadlineExceeded
		}
	}
}

// bye ends the leg's dialog with a BYE and waits (bounded) for its answer.
func (b *B2BUA) bye(l *leg, reason string) {
	// Bounded by a timer; by a context too where sending may have to
	// connect first (a timeout context costs three allocations).
	ctx := context.Background()
	if sip.IsReliable(l.transport) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.ByeTimeout)
		defer cancel()
	}
	expire := time.NewTimer(b.cfg.ByeTimeout)
	defer expire.Stop()
	req := l.request(sip.BYE)
	if reason != "" {
		req.AppendHeader(sip.NewHeader("Reason", reason))
	}
	tx, err := b.send(ctx, l, req)
	if err != nil {
		b.log.Debug("bye failed", "call_id", l.call.id, "leg", l.name, "err", err)
		return
	}
	defer tx.Terminate()
	if _, err := b.finalResponseBy(ctx, tx, expire.C); err != nil {
		b.log.Debug("bye unanswered", "call_id", l.call.id, "leg", l.name, "err", err)
	}
}

// ack sends the ACK of a 2xx on a B-leg (a new transaction: RFC 3261
// section 13.2.2.4), with body when the INVITE carried no offer, and
// returns it.
func (b *B2BUA) ack(l *leg, seq uint32, body []byte) *sip.Request {
	req := l.request(sip.ACK)
	req.CSeq().SeqNo = seq
	if body != nil {
		req.AppendHeader(b.sdpType())
		req.SetBody(body)
	}
	b.m.request(sip.ACK, "out").Inc()
	if err := l.client.WriteRequest(req); err != nil {
		b.log.Debug("ack failed", "call_id", l.call.id, "leg", l.name, "err", err)
	}
	return req
}

// cancelInvite sends a CANCEL for the pending INVITE req (RFC 3261 section
// 9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via).
func (b *B2BUA) cancelInvite(l *leg, req *sip.Request) {
	c := sip.NewRequest(sip.CANCEL, *req.Recipient.Clone())
	c.AppendHeader(sip.HeaderClone(req.Via()))
	for _, h := range headersNamed(req, "Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	c.AppendHeader(sip.HeaderClone(req.From()))
	c.AppendHeader(sip.HeaderClone(req.To()))
	c.AppendHeader(sip.HeaderClone(req.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetTransport(req.Transport())
	c.SetDestination(req.Destination())
	c.Laddr = req.Laddr
	c.SetBody(nil)
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ByeTimeout)
	defer cancel()
	b.m.request(sip.CANCEL, "out").Inc()
	tx, err := l.client.TransactionRequest(ctx, c, func(*sipgo.Client, *sip.Request) error { return nil })
	if err != nil {
		b.log.Debug("cancel failed", "call_id", l.call.id, "err", err)
		return
	}
	defer tx.Terminate()
	b.finalResponse(ctx, tx)
}

// routeSet returns the URIs of the Record-Route headers of msg, in order.
func routeSet(hdrs []sip.Header) []sip.Uri {
	var out []sip.Uri
	for _, h := range hdrs {
		switch rr := h.(type) {
		case *sip.RecordRouteHeader:
			out = append(out, *rr.Address.Clone())
		default:
			for _, v := range splitList(h.Value()) {
				var u sip.Uri
				v = strings.TrimSpace(v)
				v = strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
				if i := strings.IndexByte(v, '>'); i >= 0 {
					v = v[:i]
				}
				if sip.ParseUri(v, &u) == nil {
					out = append(out, u)
				}
			}
		}
	}
	return out
}

// splitList splits a header value on commas outside <> and quotes.
func splitList(s string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '<' && !quoted:
			depth++
		case c == '>' && !quoted && depth > 0:
			depth--
		case c == ',' && !quoted && depth == 0:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// classOf returns the code_class label of a status code, without
// allocating (it runs for every response).
func classOf(code int) string {
	switch code / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	case 6:
		return "6xx"
	}
	return strconv.Itoa(code/100) + "xx"
}

// setupClientsLocked prepares one SIP client per listening network, each
// sending from its listener (UDP from the listening socket) with the
// gateway's advertised host in Via and Contact. The PBX client of the
// registration passthrough is reused for its network.
func (b *B2BUA) setupClientsLocked() error {
	b.clients = map[string]*sipgo.Client{}
	if b.pbxClient != nil {
		b.clients[strings.ToLower(b.pbx.transport)] = b.pbxClient
	}
	add := func(network, laddr string) error {
		if _, ok := b.clients[network]; ok {
			return nil
		}
		host, portStr, err := net.SplitHostPort(laddr)
		if err != nil {
			return err
		}
		port, _ := strconv.Atoi(portStr)
		adv := b.gwHost
		if adv == "" {
			adv = b.cfg.Advertise
		}
		if adv == "" {
			adv = host
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				adv = "127.0.0.1"
			}
		}
		opts := []sipgo.ClientOption{
			sipgo.WithClientHostname(adv), sipgo.WithClientPort(port),
			sipgo.WithClientLogger(b.log.With("component", "sipgo")),
		}
		if network == "udp" {
			opts = append(opts, sipgo.WithClientConnectionAddr(laddr))
		}
		c, err := sipgo.NewClient(b.ua, opts...)
		if err != nil {
			return fmt.Errorf("client for %s: %w", network, err)
		}
		b.clients[network] = c
		b.clientAddr[network] = net.JoinHostPort(adv, portStr)
		return nil
	}
	b.clientAddr = map[string]string{}
	if b.pbxClient != nil {
		b.clientAddr[strings.ToLower(b.pbx.transport)] = net.JoinHostPort(b.gwHost, strconv.Itoa(b.gwPort))
	}
	for _, c := range b.udp {
		if err := add("udp", c.LocalAddr().String()); err != nil {
			return err
		}
	}
	for _, l := range b.listeners {
		if err := add(l.network, l.ln.Addr().String()); err != nil {
			return err
		}
	}
	b.contacts = map[string]*sip.ContactHeader{}
	for network := range b.clients {
		b.contacts[network] = b.contactFor(network)
	}
	return nil
}

// clientFor returns the client and our contact for a transport. The
// contact is shared by every call on that transport: read-only (append a
// copy of it to a message).
func (b *B2BUA) clientFor(transport string) (*sipgo.Client, *sip.ContactHeader, bool) {
	network := sip.NetworkToLower(transport)
	c, ok := b.clients[network]
	if !ok {
		return nil, nil, false
	}
	return c, b.contacts[network], true
}

// contactFor builds our contact for a listening network from its
// advertised address.
func (b *B2BUA) contactFor(network string) *sip.ContactHeader {
	host, portStr, _ := net.SplitHostPort(b.clientAddr[network])
	port, _ := strconv.Atoi(portStr)
	u := sip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: sip.NewParams()}
	if network != "udp" {
		u.UriParams.Add("transport", network)
	}
	if network == "tls" || network == "wss" {
		u.Scheme = "sips"
		if network == "tls" {
			u.UriParams = sip.NewParams()
		}
	}
	return &sip.ContactHeader{Address: u, Params: sip.NewParams()}
}

// onStrayResponse handles responses no client transaction matches: a 2xx
// to an INVITE retransmitted after its transaction ended (our ACK was
// lost, or not sent yet: sip.accepted_linger) is ACKed again when its
// dialog is known, the initial INVITE's with the ACK the call sent;
// provisional responses that lost a race with the final one are dropped.
func (b *B2BUA) onStrayResponse(res *sip.Response) {
	if b == nil || !res.IsSuccess() {
		return
	}
	cseq, callid, from := res.CSeq(), res.CallID(), res.From()
	if cseq == nil || callid == nil || from == nil || cseq.MethodName != sip.INVITE {
		return
	}
	b.callsMu.Lock()
	l := b.dialogs[dialogKey(callid.Value(), tagOf(from.Params))]
	b.callsMu.Unlock()
	if l == nil {
		b.log.Debug("stray 2xx for an unknown dialog", "call_id", callid.Value())
		return
	}
	b.m.response(res.StatusCode, "in").Inc()
	if l.reack != nil {
		switch req := l.reack.req.Load(); {
		case req == nil:
			// Our ACK waits for the A-leg's (late offer: it carries the
			// answer); it goes out then.
			return
		case req.CSeq().SeqNo == cseq.SeqNo:
			// The initial INVITE's 2xx: the same ACK again (with the
			// answer when the INVITE had no offer).
			l.reack.onRetransmission(res)
			return
		}
	}
	b.ack(l, cseq.SeqNo, nil)
}
