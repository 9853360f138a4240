package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

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

// quietLibraries points the libraries' process-wide loggers at log. Call
// it before anything starts: the libraries do not synchronise them.
func quietLibraries(log *slog.Logger) {
	redis.SetLogger(redisLog{log.With("subsystem", "identity")})
	sip.SetDefaultLogger(slog.New(sipgoHandler{log.With("subsystem", "sipgo").Handler()}))
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
