package b2bua

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// The setup every test of the package shares: a gateway run for the
// test's length, and the sipgo user agents, servers and clients of the
// phones and PBX stand-ins around it.

// newMu serialises New across parallel tests: it writes the sipgo package
// variable sip.UDPMTUSize.
var newMu sync.Mutex

// runGateway makes a gateway of cfg, its logs discarded and its metrics in
// reg (a registry of its own when nil), lets prepare (when not nil) adjust
// it before it listens, and runs it until the test ends.
func runGateway(t *testing.T, cfg Config, reg prometheus.Registerer, prepare func(*B2BUA)) *B2BUA {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	newMu.Lock()
	b, err := New(cfg, slog.New(slog.DiscardHandler), NewMetrics(reg))
	newMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(b)
	}
	if err := b.Listen(); err != nil {
		t.Fatal(err)
	}
	runUntilEnd(t, "gateway", b.Run)
	return b
}

// runUntilEnd runs run (a Run method: blocks until its ctx ends) in a
// goroutine until the test ends; then run must return nil.
func runUntilEnd(t *testing.T, what string, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s Run after cancel = %v, want nil", what, err)
		}
	})
}

// listenerAddr is the gateway's host:port on network.
func listenerAddr(t *testing.T, b *B2BUA, network string) string {
	t.Helper()
	for _, a := range b.Addrs() {
		if strings.HasPrefix(a, network+"://") {
			return strings.TrimPrefix(a, network+"://")
		}
	}
	t.Fatalf("gateway has no %s listener: %v", network, b.Addrs())
	return ""
}

// newUA is a sipgo user agent closed when the test ends.
func newUA(t *testing.T, opts ...sipgo.UserAgentOption) *sipgo.UserAgent {
	t.Helper()
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return ua
}

// newServer is a user agent (closed when the test ends) and a server on
// it that logs nothing. Register its handlers before serving: sipgo's
// handler map is not synchronised.
func newServer(t *testing.T, opts ...sipgo.UserAgentOption) (*sipgo.UserAgent, *sipgo.Server) {
	t.Helper()
	ua := newUA(t, opts...)
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return ua, srv
}

// newClient is a client sending as 127.0.0.1 from a user agent of its own
// (closed when the test ends).
func newClient(t *testing.T, uaOpts []sipgo.UserAgentOption, opts ...sipgo.ClientOption) *sipgo.Client {
	t.Helper()
	c, err := sipgo.NewClient(newUA(t, uaOpts...), append([]sipgo.ClientOption{sipgo.WithClientHostname("127.0.0.1")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// listenUDP is a UDP socket on host:0.
func listenUDP(t *testing.T, host string) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket("udp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// serveUDP serves srv on conn until the test ends and returns once it
// serves (waitServing).
func serveUDP(t *testing.T, srv *sipgo.Server, conn net.PacketConn) {
	t.Helper()
	done := make(chan struct{})
	go func() { srv.ServeUDP(conn); close(done) }()
	t.Cleanup(func() { conn.Close(); <-done })
	waitServing(t, "udp", conn.LocalAddr().String())
}

// servingClient is a client of ua sending from the address its server
// serves on network (addr, host:port; over UDP from that very socket) and
// logging nothing; port is addr's.
func servingClient(t *testing.T, ua *sipgo.UserAgent, network, addr string) (c *sipgo.Client, port int) {
	t.Helper()
	host, p, _ := net.SplitHostPort(addr)
	port, _ = strconv.Atoi(p)
	opts := []sipgo.ClientOption{sipgo.WithClientHostname(host), sipgo.WithClientPort(port),
		sipgo.WithClientLogger(slog.New(slog.DiscardHandler))}
	if network == "udp" {
		opts = append(opts, sipgo.WithClientConnectionAddr(addr))
	}
	c, err := sipgo.NewClient(ua, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c, port
}

// waitServing proves a sipgo server on addr serves (its listening socket
// is registered, so clients can send from it): an OPTIONS gets an answer.
// sipgo signals "listening" before it registers the socket.
func waitServing(t *testing.T, network, addr string) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	local := c.LocalAddr().String()
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\nVia: SIP/2.0/" + strings.ToUpper(network) + " " + local + ";branch=z9hG4bKready" + sip.GenerateTagN(8) +
		"\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:" + addr + ">\r\nCall-ID: ready-" + sip.GenerateTagN(8) +
		"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("peer %s does not answer: %v", addr, err)
	}
}
