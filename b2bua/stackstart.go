package b2bua

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
)

// Stack ballast. Go starts every goroutine with a stack of the average
// size in use on the stacks the collector scanned in its last cycle plus
// a guard, rounded up to a power of two (at least 2 KB; the runtime's
// adaptivestackstart). sipgo runs each received message's handler on a
// fresh goroutine, and its frames plus ours need 4–8 KB: every one of the
// ~7 goroutines of a call grew its stack (allocate, copy, re-point every
// frame) once or twice, 5–10 % of the gateway's CPU. Parked goroutines
// holding ballastFrame bytes of stack, one and a half times as many as
// the other goroutines, keep that average between ~3.7 KB and ~6.4 KB (or
// the others' own average when larger), so new goroutines start with 8
// KB and rarely grow (/gc/stack/starting-size:bytes in runtime/metrics).
// Cost: 8 KB of stack per ballast goroutine (at most ballastMax, 4 MB)
// and a microsecond of stack scanning each per GC cycle.
const (
	ballastFrame = 6 << 10 // + guard + the entry frames: fits an 8 KB stack
	ballastMax   = 512
	ballastCheck = time.Second
)

// runStackBallast keeps the ballast topped up until ctx ends.
func runStackBallast(ctx context.Context) {
	n := 0
	topUp := func() {
		for n < ballastMax && 2*n < 3*(runtime.NumGoroutine()-n) {
			ballastStarted.Add(1)
			go stackBallast(ctx.Done())
			n++
		}
	}
	topUp()
	t := time.NewTicker(ballastCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			topUp()
		}
	}
}

// stackBallast holds a frame of ballastFrame bytes (no pointers: its
// scan is cheap) until done.
//
//go:noinline
func stackBallast(done <-chan struct{}) byte {
	var pad [ballastFrame]byte
	ballastParked.Add(1)
	<-done
	ballastParked.Add(-1)
	ballastStarted.Add(-1)
	return pad[len(done)%len(pad)]
}

// ballastStarted and ballastParked count the ballast goroutines of the
// process started and reaching their wait (for TestStackBallast).
var ballastStarted, ballastParked atomic.Int32
