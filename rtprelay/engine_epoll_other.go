//go:build !linux

package rtprelay

import (
	"log/slog"
	"time"
)

const epollSupported = false

func newEpollEngine(epoch time.Time, log *slog.Logger, workers int) engine {
	return newGoEngine(epoch, log) // unreachable: New rejects Engine "epoll" off Linux
}
