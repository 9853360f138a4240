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
	sip.SetDefaultLogger(log.With("subsystem", "sipgo"))
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
