package b2bua

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
)

// TestStackBallast: with the ballast running, the collector's cycle sets
// the starting stack of new goroutines to 8 KB, enough for the frames of a
// sipgo handler and ours; without it this process starts them at 2 KB.
func TestStackBallast(t *testing.T) {
	before := startingStackSize()
	// Some parked goroutines with small stacks, as a running gateway has.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { <-stop })
	}
	defer wg.Wait()
	defer close(stop)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		runStackBallast(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// Wait until the first top-up is complete (1.5 ballast goroutines per
	// other goroutine) and every ballast goroutine holds its frame: the
	// GC cycles count the stacks as they scan them.
	for {
		started, parked := int(ballastStarted.Load()), int(ballastParked.Load())
		if started > 0 && parked == started && (started >= ballastMax || 2*started >= 3*(runtime.NumGoroutine()-started)) {
			break
		}
		runtime.Gosched()
	}
	if got := startingStackSize(); got < 8<<10 {
		t.Fatalf("starting stack size %d bytes with the ballast (%d before), want >= 8192", got, before)
	}
	t.Logf("starting stack size %d bytes before the ballast", before)
}

// startingStackSize runs two GC cycles (the first may have begun before
// the stacks it should count existed) and returns the runtime's starting
// stack size.
func startingStackSize() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
