// Command cusax-gw is the CUSAX gateway (RFC 7081): an XMPP component, a
// SIP back-to-back user agent and an RTP relay that share one identity map.
// See the README and `cusax-gw help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM
// (graceful drain). A second signal exits at once with status 1, after the
// function registered with onKill (cmdRun's logs the signal and writes out
// the buffered log).
func signalContext() (context.Context, context.CancelFunc) {
	k := new(killHook)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), killHookKey{}, k))
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		sig := <-ch
		if !k.run(sig) {
			fmt.Fprintf(os.Stderr, "cusax-gw: second signal (%v): exiting without drain\n", sig)
		}
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

type killHookKey struct{}

// killHook holds what runs before a second signal ends the process.
type killHook struct {
	mu sync.Mutex
	f  func(os.Signal)
}

func (k *killHook) run(sig os.Signal) bool {
	k.mu.Lock()
	f := k.f
	k.mu.Unlock()
	if f == nil {
		return false
	}
	f(sig)
	return true
}

// onKill has f run before a second signal ends the process (see
// signalContext) until the returned function is called. Without
// signalContext's context (tests calling cli), it does nothing.
func onKill(ctx context.Context, f func(os.Signal)) (unregister func()) {
	k, _ := ctx.Value(killHookKey{}).(*killHook)
	if k == nil {
		return func() {}
	}
	k.mu.Lock()
	k.f = f
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		k.f = nil
		k.mu.Unlock()
	}
}
