package identity

import (
	"context"
	"sync"
)

// defaultWatchBuffer is the per-watcher event buffer of the in-process
// change feed.
const defaultWatchBuffer = 1024

// replayFunc returns the events with from < Rev <= to in order, or ok false
// when the log no longer holds all of them.
type replayFunc func(from, to uint64) (evs []Event, ok bool, err error)

// feed is the in-process change feed shared by the memory and bolt stores.
//
// Writers publish under their store's write lock, after the change is
// committed, so events arrive in revision order. Each watcher has a
// buffered channel; publishing never blocks: a watcher whose buffer is full
// is dropped from the broadcast (its channel closed), and its goroutine
// re-registers and catches up from the store's event log, or sends
// OpResync when the log no longer reaches back far enough. The stores
// using it give every event its own revision, one more than the last, so
// a watcher that sees a jump knows it missed events and catches up the
// same way.
type feed struct {
	replay replayFunc
	buf    int

	mu       sync.Mutex
	rev      uint64 // last published revision
	watchers map[*watcher]struct{}
	closed   bool
	done     chan struct{} // closed by close
	wg       sync.WaitGroup
}

type watcher struct {
	ch chan Event
}

func newFeed(rev uint64, buf int, replay replayFunc) *feed {
	if buf <= 0 {
		buf = defaultWatchBuffer
	}
	return &feed{replay: replay, buf: buf, rev: rev, watchers: map[*watcher]struct{}{}, done: make(chan struct{})}
}

// publish delivers evs (in revision order) to every watcher. The caller
// holds its store's write lock, so publishes do not interleave.
func (f *feed) publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = evs[len(evs)-1].Rev
	for w := range f.watchers {
		for _, ev := range evs {
			select {
			case w.ch <- ev:
				continue
			default:
			}
			// Too slow: stop feeding it; its goroutine catches up from the log.
			close(w.ch)
			delete(f.watchers, w)
			break
		}
	}
}

// register adds a watcher and returns it with the revision it starts after.
func (f *feed) register() (*watcher, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, 0, ErrClosed
	}
	w := &watcher{ch: make(chan Event, f.buf)}
	f.watchers[w] = struct{}{}
	return w, f.rev, nil
}

func (f *feed) unregister(w *watcher) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.watchers[w]; ok {
		delete(f.watchers, w)
		close(w.ch)
	}
}

// watch implements Store.Watch.
func (f *feed) watch(ctx context.Context, from uint64) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, ErrClosed
	}
	w := &watcher{ch: make(chan Event, f.buf)}
	f.watchers[w] = struct{}{}
	rev := f.rev
	f.wg.Add(1) // under mu: close cannot be waiting yet
	f.mu.Unlock()
	out := make(chan Event)
	go f.run(ctx, w, rev, from, out)
	return out, nil
}

func (f *feed) run(ctx context.Context, w *watcher, rev, last uint64, out chan<- Event) {
	defer f.wg.Done()
	defer close(out)
	defer func() {
		if w != nil {
			f.unregister(w)
		}
	}()
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		case <-f.done:
			return false
		}
	}
	for {
		// Everything in (last, rev] comes from the log, later events from w.ch.
		if last < rev {
			evs, ok, err := f.replay(last, rev)
			if err != nil || !ok {
				if !send(Event{Op: OpResync, Rev: rev}) {
					return
				}
			} else {
				for _, ev := range evs {
					if !send(ev) {
						return
					}
				}
			}
			last = rev
		}
	live:
		for {
			select {
			case ev, ok := <-w.ch:
				if !ok {
					break live
				}
				if ev.Rev <= last {
					continue
				}
				if ev.Rev > last+1 {
					// Revisions are contiguous: events were not
					// published (a large Import publishes only what its
					// log keeps). Catch up from the log.
					f.unregister(w)
					break live
				}
				if !send(ev) {
					return
				}
				last = ev.Rev
			case <-ctx.Done():
				return
			}
		}
		// Dropped for being slow, or the store closed.
		var err error
		if w, rev, err = f.register(); err != nil {
			w = nil
			return
		}
	}
}

// close ends every watch and waits for the watchers' goroutines.
func (f *feed) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	for w := range f.watchers {
		close(w.ch)
		delete(f.watchers, w)
	}
	f.mu.Unlock()
	f.wg.Wait()
}
