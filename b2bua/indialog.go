package b2bua

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/emiago/sipgo/sip"
)

// In-dialog requests (RFC 3261 section 12.2.2): matched by Call-ID and our
// tag (the request's To tag), answered 481 when no dialog matches, and
// otherwise handled or passed to the other leg.

// onDialogMethod handles methods that may come inside or outside a dialog:
// inside, they are passed to the other leg; outside, outside handles them.
func (b *B2BUA) onDialogMethod(outside func(*sip.Request, sip.ServerTransaction)) func(*sip.Request, sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if to := req.To(); to != nil && to.Params.Has("tag") {
			b.onInDialog(req, tx)
			return
		}
		outside(req, tx)
	}
}

func (b *B2BUA) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	l := b.dialogFor(req)
	if l == nil {
		b.respond(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	cseq := req.CSeq()
	if cseq == nil {
		b.respond(tx, req, 400, "Bad Request")
		return
	}
	l.mu.Lock()
	if cseq.SeqNo <= l.remoteSeq && req.Method != sip.BYE {
		// RFC 3261 section 12.2.2: a lower CSeq is answered 500.
		l.mu.Unlock()
		b.respond(tx, req, 500, "Server Internal Error", sip.NewHeader("Warning", `399 cusax-gw "CSeq out of order"`))
		return
	}
	if cseq.SeqNo > l.remoteSeq {
		l.remoteSeq = cseq.SeqNo
	}
	if req.Method == sip.INVITE || req.Method == sip.UPDATE {
		if ct, ok := sipContact(req); ok {
			l.target = *ct.Address.Clone() // target refresh
		}
	}
	l.mu.Unlock()
	switch req.Method {
	case sip.BYE:
		b.respond(tx, req, 200, "OK")
		if l.call.log().enabled(slog.LevelDebug) {
			l.call.log().Debug("bye", "from_leg", l.name)
		}
		result := resultCancelled
		b.endCall(l.call, l, result, 0, "")
	case sip.INVITE, sip.UPDATE:
		b.offerAnswer(l, req, tx)
	case sip.PRACK:
		// The gateway never sends reliable provisional responses.
		b.respond(tx, req, 481, "Call/Transaction Does Not Exist")
	default:
		b.forwardInDialog(l, req, tx)
	}
}

// onAck routes the ACK of a 2xx to the leg waiting for it.
func (b *B2BUA) onAck(req *sip.Request, tx sip.ServerTransaction) {
	b.m.request(sip.ACK, "in").Inc()
	if l := b.dialogFor(req); l != nil {
		l.mu.Lock()
		ackCh := l.ackCh
		l.mu.Unlock()
		select {
		case ackCh <- req: // never when nil
		default:
		}
	}
}

// offerAnswer handles a re-INVITE or UPDATE from leg l: the offer (if any)
// is re-anchored and sent to the other leg, whose answer comes back
// anchored. A re-INVITE without an offer gets the other leg's offer in the
// 2xx and its answer in the ACK.
func (b *B2BUA) offerAnswer(l *leg, req *sip.Request, tx sip.ServerTransaction) {
	c, o := l.call, l.other()
	c.mu.Lock()
	busy := c.reinvite
	c.reinvite = true
	c.mu.Unlock()
	if busy {
		b.respond(tx, req, 491, "Request Pending")
		return
	}
	defer func() {
		c.mu.Lock()
		c.reinvite = false
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.PBXTimeout)
	defer cancel()

	offer := sdpBody(req)
	body := offer
	if offer != nil {
		var err error
		if body, err = b.offer(ctx, c, l, offer); err != nil {
			code, reason := 500, "Server Internal Error"
			switch {
			case errors.Is(err, rtprelay.ErrBadSDP):
				code, reason = 488, "Not Acceptable Here"
			case errors.Is(err, rtprelay.ErrNoPorts):
				code, reason = 503, "Service Unavailable"
			}
			c.log().Info("re-offer refused", "method", string(req.Method), "err", err)
			b.respond(tx, req, code, reason)
			return
		}
	}
	oreq := o.request(req.Method)
	copyHeaders(req, oreq, inDialogHeaders...)
	if s := filterSupported(headersNamed(req, "Supported")); s != "" {
		oreq.AppendHeader(sip.NewHeader("Supported", s))
	}
	if body != nil {
		oreq.AppendHeader(b.sdpType())
	}
	oreq.SetBody(body)
	res, err := b.roundTrip(ctx, o, oreq)
	if err != nil {
		c.log().Info("in-dialog request unanswered", "method", string(req.Method), "leg", o.name, "err", err)
		b.respond(tx, req, 408, "Request Timeout")
		return
	}
	seq := oreq.CSeq().SeqNo
	if !res.IsSuccess() {
		b.reply(l, req, tx, res, nil)
		return
	}
	if ct, ok := responseContact(res); ok {
		o.mu.Lock()
		o.target = ct
		o.mu.Unlock()
	}
	rsdp := sdpBody(res)
	rbody := rsdp
	if rsdp != nil {
		if offer != nil {
			rbody, err = b.answer(ctx, c, o, rsdp)
		} else {
			rbody, err = b.offer(ctx, c, o, rsdp)
		}
		if err != nil {
			c.log().Warn("in-dialog sdp refused", "leg", o.name, "err", err)
			rbody = nil
		}
	}
	if req.Method == sip.UPDATE {
		b.reply(l, req, tx, res, rbody)
		return
	}
	lateOffer := offer == nil && rsdp != nil
	if !lateOffer {
		b.ack(o, seq, nil)
		// The offer/answer exchange is complete: a new re-INVITE may come
		// as soon as our 2xx is ACKed (no 491 for it).
		c.mu.Lock()
		c.reinvite = false
		c.mu.Unlock()
	}
	ack := b.respond2xx(c, l, tx, req, res, rbody)
	if !lateOffer {
		return
	}
	var abody []byte
	if ack != nil {
		if asdp := sdpBody(ack); asdp != nil {
			if abody, err = b.answer(ctx, c, l, asdp); err != nil {
				c.log().Warn("answer in ACK refused", "leg", l.name, "err", err)
			}
		}
	}
	b.ack(o, seq, abody)
}

// forwardInDialog passes an in-dialog request (INFO, NOTIFY, REFER,
// MESSAGE, OPTIONS, …) to the other leg and relays its final response.
func (b *B2BUA) forwardInDialog(l *leg, req *sip.Request, tx sip.ServerTransaction) {
	o := l.other()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.PBXTimeout)
	defer cancel()
	oreq := o.request(req.Method)
	copyHeaders(req, oreq, inDialogHeaders...)
	copyHeaders(req, oreq, "Content-Type")
	oreq.SetBody(req.Body())
	res, err := b.roundTrip(ctx, o, oreq)
	if err != nil {
		l.call.log().Info("in-dialog request unanswered", "method", string(req.Method), "leg", o.name, "err", err)
		b.respond(tx, req, 408, "Request Timeout")
		return
	}
	b.reply(l, req, tx, res, res.Body())
}

// roundTrip sends an in-dialog request and waits for its final response.
func (b *B2BUA) roundTrip(ctx context.Context, l *leg, req *sip.Request) (*sip.Response, error) {
	tx, err := b.send(ctx, l, req)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	return b.finalResponse(ctx, tx)
}

// reply answers an in-dialog request on leg l with the other leg's
// response res (status, whitelisted headers, body and its type).
func (b *B2BUA) reply(l *leg, req *sip.Request, tx sip.ServerTransaction, res *sip.Response, body []byte) {
	out := b.responseFor(l, req, res.StatusCode, res.Reason, res, nil)
	if len(body) > 0 {
		if ct := headerNamed(res, "Content-Type"); ct != nil && sdpBody(res) == nil {
			out.AppendHeader(sip.HeaderClone(ct))
		} else {
			out.AppendHeader(b.sdpType())
		}
		out.SetBody(body)
	}
	if err := tx.Respond(out); err != nil {
		l.call.log().Debug("respond failed", "status", res.StatusCode, "err", err)
		return
	}
	b.m.response(res.StatusCode, "out").Inc()
}
