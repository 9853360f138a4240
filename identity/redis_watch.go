package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Watch implements Store. It subscribes to {p}events first, then replays
// the log from revision from, then forwards live events, skipping those
// already replayed. It sends OpResync (with the current revision) when
// from is older than the log or newer than the store, after the
// subscription dropped and came back, and when the consumer falls
// WatchBuffer events behind. A gap in the live events (an import, a lost
// message) is filled from the log, or answered with OpResync if the log no
// longer holds it.
//
// Revisions live in Redis: a Redis that restarts without persistence
// starts over at 0. A running watcher then sends OpResync (its
// subscription dropped); a Watch started later with a revision from
// before the reset cannot tell the new revisions from the old ones.
//
// Watch fails with an error wrapping ErrUnavailable if it cannot
// subscribe. The channel closes when ctx ends or the store is closed;
// one goroutine per Watch runs until then.
func (s *RedisStore) Watch(ctx context.Context, from uint64) (<-chan Event, error) {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		s.wg.Done()
		return nil, s.fail("watch", err)
	}

	sctx, cancel := s.opctx(ctx)
	ps := s.client.Subscribe(sctx, s.chName)
	_, err := ps.ReceiveTimeout(sctx, s.opts.OpTimeout) // the subscription's confirmation
	cancel()
	if err != nil {
		_ = ps.Close()
		s.wg.Done()
		return nil, s.fail("watch", err)
	}
	page := min(256, s.opts.WatchBuffer)
	w := &redisWatcher{
		s:      s,
		ps:     ps,
		in:     ps.ChannelWithSubscriptions(redis.WithChannelSize(256)),
		out:    make(chan Event),
		last:   from,
		behind: true,
		page:   page,
		max:    s.opts.WatchBuffer,
		ready:  make(chan struct{}),
		retry:  time.NewTimer(time.Hour),
	}
	w.retry.Stop()
	close(w.ready)
	go w.run(ctx)
	return w.out, nil
}

// redisWatcher is the state of one Watch, owned by its goroutine.
type redisWatcher struct {
	s   *RedisStore
	ps  *redis.PubSub
	in  <-chan any
	out chan Event

	queue []Event // events not yet taken by the consumer, at most max
	last  uint64  // the revision of the newest event queued or skipped
	// behind: the log holds events after last that have not been read.
	behind bool
	// resync: the subscription came back; send OpResync at the current
	// revision.
	resync bool
	page   int // log entries read per step
	max    int

	ready   chan struct{} // closed: selecting it means "work to do now"
	retry   *time.Timer   // after a failed step
	waiting bool          // retry is armed
	backoff time.Duration
}

// redisWireEvent is one pub/sub message.
type redisWireEvent struct {
	Rev      uint64          `json:"rev"`
	Op       string          `json:"op"`
	First    uint64          `json:"first,omitempty"`
	Identity json.RawMessage `json:"identity,omitempty"`
}

func (w *redisWatcher) run(ctx context.Context) {
	defer w.s.wg.Done()
	defer close(w.out)
	defer func() {
		w.retry.Stop()
		_ = w.ps.Close()
		for range w.in { // let go-redis' receiver goroutine see the close and exit
		}
	}()
	for {
		var out chan<- Event
		var head Event
		if len(w.queue) > 0 {
			out, head = w.out, w.queue[0]
		}
		var work <-chan struct{}
		if (w.resync || w.behind) && !w.waiting && len(w.queue)+w.page <= w.max {
			work = w.ready
		}
		var retry <-chan time.Time
		if w.waiting {
			retry = w.retry.C
		}
		select {
		case <-ctx.Done():
			return
		case <-w.s.done:
			return
		case m, ok := <-w.in:
			if !ok {
				return
			}
			w.handle(m)
		case out <- head:
			w.queue[0] = Event{}
			w.queue = w.queue[1:]
		case <-work:
			if err := w.step(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.wait()
			} else {
				w.backoff = 0
			}
		case <-retry:
			w.waiting = false
		}
	}
}

// wait arms the retry timer with exponential backoff (50ms to 2s).
func (w *redisWatcher) wait() {
	w.backoff = min(max(2*w.backoff, 50*time.Millisecond), 2*time.Second)
	w.retry.Reset(w.backoff)
	w.waiting = true
}

// handle takes one message from the subscription.
func (w *redisWatcher) handle(m any) {
	switch m := m.(type) {
	case *redis.Subscription:
		if m.Kind == "subscribe" {
			// The connection dropped and go-redis subscribed again:
			// whatever was published meanwhile is lost.
			w.resync = true
		}
	case *redis.Message:
		if w.resync {
			return // the resync reads the revision after this event
		}
		var ev redisWireEvent
		if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil || ev.Rev <= w.last {
			return
		}
		if w.behind {
			return // the log has it
		}
		if ev.Rev != w.last+1 || ev.Op == "import" {
			w.behind = true
			return
		}
		e, err := redisEvent(ev.Rev, ev.Op, ev.Identity)
		if err != nil {
			w.behind = true // the log entry is the same; it will resync
			return
		}
		w.push(e)
	}
}

// push queues e, or replaces the queue with one OpResync when the
// consumer is too far behind.
func (w *redisWatcher) push(e Event) {
	w.last = e.Rev
	if len(w.queue) >= w.max {
		w.queue = append(w.queue[:0], Event{Op: OpResync, Rev: e.Rev})
		return
	}
	w.queue = append(w.queue, e)
}

// sendResync drops the queue for one OpResync at rev.
func (w *redisWatcher) sendResync(rev uint64) {
	clear(w.queue)
	w.queue = append(w.queue[:0], Event{Op: OpResync, Rev: rev})
	w.last = rev
	w.behind = false
	w.resync = false
}

// step does one piece of pending work with one round trip: a resync, or
// one page of the log read together with the current revision.
func (w *redisWatcher) step(ctx context.Context) error {
	s := w.s
	ctx, cancel := s.opctx(ctx)
	defer cancel()
	if w.resync {
		rev, err := s.rev(ctx)
		if err != nil {
			return err
		}
		w.sendResync(rev)
		return nil
	}
	var xr *redis.XMessageSliceCmd
	var rc *redis.StringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		xr = p.XRangeN(ctx, s.logKey, fmt.Sprintf("%d-0", w.last+1), "+", int64(w.page))
		rc = p.Get(ctx, s.revKey)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return s.fail("watch", err)
	}
	rev, err := rc.Uint64()
	if errors.Is(err, redis.Nil) {
		rev, err = 0, nil
	}
	if err != nil {
		return s.fail("watch", err)
	}
	msgs := xr.Val()
	if len(msgs) == 0 {
		if rev != w.last {
			w.sendResync(rev) // the log lost them, or the store was reset
		} else {
			w.behind = false
		}
		return nil
	}
	if r, ok := redisParseRev(msgs[0].ID); !ok || r != w.last+1 {
		w.sendResync(rev)
		return nil
	}
	for _, m := range msgs {
		r, _ := redisParseRev(m.ID)
		op, _ := m.Values["op"].(string)
		body, _ := m.Values["identity"].(string)
		e, err := redisEvent(r, op, json.RawMessage(body))
		if err != nil {
			w.sendResync(rev)
			return nil
		}
		w.push(e)
	}
	if w.last >= rev {
		w.behind = false
	}
	return nil
}

// redisEvent builds an Event from a logged or published change.
func redisEvent(rev uint64, op string, body json.RawMessage) (Event, error) {
	e := Event{Rev: rev}
	switch op {
	case "put":
		e.Op = OpPut
	case "delete":
		e.Op = OpDelete
	default:
		return Event{}, fmt.Errorf("identity: redis: unknown op %q in change feed", op)
	}
	if err := json.Unmarshal(body, &e.Identity); err != nil {
		return Event{}, fmt.Errorf("identity: redis: change feed entry %d: %w", rev, err)
	}
	e.JID = e.Identity.JID
	return e, nil
}
