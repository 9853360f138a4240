// Command cusax-gw is the CUSAX gateway (RFC 7081): an XMPP component, a
// SIP back-to-back user agent and an RTP relay that share one identity map.
// See the README and `cusax-gw help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM
// (graceful drain). A second signal exits at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		sig := <-ch
		fmt.Fprintf(os.Stderr, "cusax-gw: second signal (%v): exiting without drain\n", sig)
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
