//go:build !linux

package rtprelay

import (
	"log/slog"
	"time"
)

const epollSupported = false

type epollWorker struct{} // in epollState; never made off Linux

func newEpollEngine(epoch time.Time, log *slog.Logger, workers int) engine {
	return newGoEngine(epoch, log) // unreachable: New rejects Engine "epoll" off Linux
}
