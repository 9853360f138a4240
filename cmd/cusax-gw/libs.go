package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
)

// redisLog routes go-redis's internal messages (dial retries, pool
// errors), which it otherwise prints to stderr, into our logger at Debug:
// the identity directory already reports an unreachable Redis, once, at
// Warn, and in /readyz and the metrics.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.Debug("redis client", "err", strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// quietLibraries points the libraries' process-wide loggers at log. The
// libraries read their globals unsynchronised, so they are set once per
// process, to handlers that forward to whatever logger the latest command
// gave (tests run several commands in one process, while goroutines of an
// earlier command's SIP stack may still be winding down).
func quietLibraries(log *slog.Logger) {
	h := log.Handler()
	libHandler.Store(&h)
	quietOnce.Do(func() {
		fwd := slog.New(forwardHandler{})
		redis.SetLogger(redisLog{fwd.With("subsystem", "identity")})
		sip.SetDefaultLogger(slog.New(sipgoHandler{fwd.With("subsystem", "sipgo").Handler()}))
	})
}

var (
	quietOnce  sync.Once
	libHandler atomic.Pointer[slog.Handler]
)

// forwardHandler sends records to the handler quietLibraries stored last,
// applying the attributes and groups the library added on the way.
type forwardHandler struct {
	ops []func(slog.Handler) slog.Handler
}

func (f forwardHandler) current() slog.Handler {
	p := libHandler.Load()
	if p == nil {
		return slog.DiscardHandler
	}
	h := *p
	for _, op := range f.ops {
		h = op(h)
	}
	return h
}

// Enabled asks the stored handler itself: attributes and groups do not
// change the level, and sipgo asks on every transaction (no chain built
// for records that are dropped).
func (f forwardHandler) Enabled(ctx context.Context, l slog.Level) bool {
	p := libHandler.Load()
	return p != nil && (*p).Enabled(ctx, l)
}

func (f forwardHandler) Handle(ctx context.Context, r slog.Record) error {
	return f.current().Handle(ctx, r)
}

func (f forwardHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return forwardHandler{ops: append(slices.Clip(f.ops), func(h slog.Handler) slog.Handler { return h.WithAttrs(as) })}
}

func (f forwardHandler) WithGroup(name string) slog.Handler {
	return forwardHandler{ops: append(slices.Clip(f.ops), func(h slog.Handler) slog.Handler { return h.WithGroup(name) })}
}

// sipgoHandler tames sipgo's transport logging: an unparseable message is
// logged at Error with the whole message as "data", which lets any peer
// flood the log and would write what the message carried (Authorization
// headers included) to it. Such records drop to Debug and keep only the
// size of the data.
type sipgoHandler struct{ slog.Handler }

func (h sipgoHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "failed to parse" {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, slog.LevelDebug, "unparseable SIP message dropped", r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "data" {
			out.AddAttrs(slog.Int("bytes", len(a.Value.String())))
		} else {
			out.AddAttrs(a)
		}
		return true
	})
	if !h.Handler.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	return h.Handler.Handle(ctx, out)
}

func (h sipgoHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sipgoHandler{h.Handler.WithAttrs(as)}
}

func (h sipgoHandler) WithGroup(name string) slog.Handler {
	return sipgoHandler{h.Handler.WithGroup(name)}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
