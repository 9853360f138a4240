package b2bua

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"
)

// PBX liveness. Over UDP a dead PBX gives no error: every request toward
// it would wait the whole transaction timeout (32 s) before the phone got
// its 408, by which time the phone had given up. So the gateway pings the
// PBX with OPTIONS from its listening socket every PBXPing and marks it
// down after two unanswered pings or (pings on) one forwarded request that
// timed out; while it is down, REGISTERs and calls from phones get 503 with
// Retry-After at once. One answered ping (any status) marks it up again.

const pbxFailuresDown = 2

var pbxDownWarning = sip.NewHeader("Warning", `399 cusax-gw "PBX unreachable"`)

// PBXUp reports whether the PBX answers (true until proven otherwise).
func (b *B2BUA) PBXUp() bool { return !b.pbxDown.Load() }

func (b *B2BUA) setPBXDown(down bool, why string) {
	if b.pbxDown.Swap(down) == down {
		return
	}
	if down {
		b.m.PBXUp.Set(0)
		b.log.Warn("PBX unreachable: phones get 503 until it answers again", "peer", b.pbx.hostport, "why", why)
	} else {
		b.m.PBXUp.Set(1)
		b.log.Info("PBX answers again", "peer", b.pbx.hostport)
	}
}

// pbxTimedOut notes a forwarded request that got no answer.
func (b *B2BUA) pbxTimedOut(err error) {
	if b.cfg.PBXPing <= 0 {
		return // without pings nothing would ever mark it up again
	}
	if errors.Is(err, sip.ErrTransactionTimeout) || errors.Is(err, context.DeadlineExceeded) {
		b.setPBXDown(true, "request timed out")
	}
}

// watchPBX pings the PBX until ctx ends.
func (b *B2BUA) watchPBX(ctx context.Context) {
	if b.pbxClient == nil || b.cfg.PBXPing <= 0 {
		return
	}
	t := time.NewTicker(b.cfg.PBXPing)
	defer t.Stop()
	failures := 0
	for {
		err := b.pingPBX(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			failures = 0
			b.setPBXDown(false, "")
		default:
			failures++
			if failures >= pbxFailuresDown {
				b.setPBXDown(true, err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pingPBX sends one OPTIONS; any final response means alive.
func (b *B2BUA) pingPBX(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(b.cfg.PBXPing, 4*time.Second))
	defer cancel()
	req := sip.NewRequest(sip.OPTIONS, *b.pbx.uri.Clone())
	req.AppendHeader(sip.NewHeader("User-Agent", b.cfg.UserAgent))
	req.SetTransport(b.pbx.transport)
	req.SetDestination(b.pbx.hostport)
	_, err := b.doPBX(ctx, req)
	return err
}
