package b2bua

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/rtprelay"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkCall measures one call through the gateway: a phone on
// 127.0.0.1 sends INVITE (SDP), gets 180 and 200, sends ACK and BYE, gets
// the BYE's 200; the PBX stand-in on 127.0.0.2 answers 180, 200 (SDP) and
// the BYE's 200. Both peers are raw UDP sockets with byte-level parsing, so
// the allocations and CPU reported are nearly all the gateway's (its sipgo
// stack included); media anchoring is a passthrough (the relay has its own
// benchmarks). It keeps -calls-in-flight calls running at once, so ns/op
// is the throughput of the whole process; cpu-us/call is the process's
// user+system CPU per call (peers included, on every core).
//
//	go test ./b2bua -run '^$' -bench BenchmarkCall -benchtime 20000x -count 6
func BenchmarkCall(b *testing.B) {
	pbx := newRawPeer(b, "127.0.0.2")
	phone := newRawPeer(b, "127.0.0.1")
	gw, err := New(Config{
		Listen: []Listener{{"udp", "127.0.0.1:0"}},
		PBX:    "sip:" + pbx.addr.String(),
		CallOptions: CallOptions{
			Media:    passMedia{},
			Trusted:  []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
			Resolver: mapResolver{"sip:alice@example.com": {"alice@example.com", "Alice"}},
		},
	}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	if err := gw.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	defer func() {
		// A call ends at the phone before the gateway's BYE toward the
		// PBX is answered: let those finish (goleak saw them).
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		gw.Drain(dctx)
		dcancel()
		cancel()
		<-done
	}()
	gwAddr, err := net.ResolveUDPAddr("udp", gw.Addrs()[0][len("udp://"):])
	if err != nil {
		b.Fatal(err)
	}
	go pbx.servePBX()

	// The phone: a window of calls in flight; the reader ACKs each 200 to
	// an INVITE, sends the BYE at once and completes the call on its 200.
	const inFlight = 32
	window := make(chan struct{}, inFlight)
	ended := make(chan struct{}, inFlight)
	go phone.servePhone(gwAddr, ended)

	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	var buf []byte
	sent, finished := 0, 0
	timeout := time.NewTimer(10 * time.Second)
	for finished < b.N {
		if sent < b.N && len(window) < inFlight {
			window <- struct{}{}
			buf = phoneInvite(buf[:0], phone.addr, gwAddr, sent)
			phone.conn.WriteToUDP(buf, gwAddr)
			sent++
			continue
		}
		timeout.Reset(10 * time.Second)
		select {
		case <-ended:
			<-window
			finished++
		case <-timeout.C:
			b.Fatalf("%d of %d calls ended; no progress for 10 s", finished, b.N)
		}
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/call")
}

// passMedia anchors nothing: the SDP passes unchanged.
type passMedia struct{}

func (passMedia) Offer(_ context.Context, _, _ string, sdp []byte) ([]byte, error)  { return sdp, nil }
func (passMedia) Answer(_ context.Context, _, _ string, sdp []byte) ([]byte, error) { return sdp, nil }
func (passMedia) Delete(string) error                                               { return nil }
func (passMedia) Query(string) (rtprelay.Stats, error)                              { return rtprelay.Stats{}, nil }

// rawPeer is a UDP socket speaking just enough SIP for BenchmarkCall.
type rawPeer struct {
	tb   testing.TB
	conn *net.UDPConn
	addr *net.UDPAddr
}

func newRawPeer(tb testing.TB, host string) *rawPeer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		tb.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	tb.Cleanup(func() { c.Close() })
	return &rawPeer{tb: tb, conn: c, addr: c.LocalAddr().(*net.UDPAddr)}
}

const benchSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"

func phoneInvite(buf []byte, phone, gw *net.UDPAddr, n int) []byte {
	buf = append(buf, "INVITE sip:+15551230002@"...)
	buf = append(buf, gw.String()...)
	buf = append(buf, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	buf = append(buf, phone.String()...)
	buf = append(buf, ";branch=z9hG4bK-inv-"...)
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, "\r\nFrom: <sip:alice@example.com>;tag=ph"...)
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, "\r\nTo: <sip:+15551230002@example.com>\r\nCall-ID: bench-"...)
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, "\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@"...)
	buf = append(buf, phone.String()...)
	buf = append(buf, ">\r\nMax-Forwards: 70\r\nSubject: bench\r\nContent-Type: application/sdp\r\nContent-Length: "...)
	buf = strconv.AppendInt(buf, int64(len(benchSDP)), 10)
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, benchSDP...)
}

// header returns the value of the first header name (with its colon, e.g.
// "Call-ID:") in msg.
func header(msg []byte, name string) []byte {
	for line := range bytes.SplitSeq(msg, []byte("\r\n")) {
		if len(line) == 0 {
			return nil
		}
		if len(line) > len(name) && string(line[:len(name)]) == name {
			return bytes.TrimSpace(line[len(name):])
		}
	}
	return nil
}

// servePhone reads the gateway's responses: a 200 to the INVITE is ACKed
// and the call hung up at once; a 200 to the BYE ends the call. A
// retransmitted 200 (a loaded machine) is ACKed again but neither hangs
// up twice nor ends the call twice.
func (p *rawPeer) servePhone(gw *net.UDPAddr, ended chan<- struct{}) {
	in := make([]byte, 65536)
	var out []byte
	hungUp, done := map[string]bool{}, map[string]bool{}
	for {
		n, _, err := p.conn.ReadFromUDP(in)
		if err != nil {
			return
		}
		msg := in[:n]
		if !bytes.HasPrefix(msg, []byte("SIP/2.0 200")) {
			continue
		}
		cseq := header(msg, "CSeq:")
		switch {
		case bytes.HasSuffix(cseq, []byte("INVITE")):
			callID, to := header(msg, "Call-ID:"), header(msg, "To:")
			n := bytes.TrimPrefix(callID, []byte("bench-"))
			reqs := []string{"ACK", "BYE"}
			if hungUp[string(callID)] {
				reqs = reqs[:1]
			}
			hungUp[string(callID)] = true
			for _, req := range reqs {
				out = append(out[:0], req...)
				out = append(out, " sip:"...)
				out = append(out, gw.String()...)
				out = append(out, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
				out = append(out, p.addr.String()...)
				out = append(out, ";branch=z9hG4bK-"...)
				out = append(out, req...)
				out = append(out, '-')
				out = append(out, n...)
				out = append(out, "\r\nFrom: <sip:alice@example.com>;tag=ph"...)
				out = append(out, n...)
				out = append(out, "\r\nTo: "...)
				out = append(out, to...)
				out = append(out, "\r\nCall-ID: "...)
				out = append(out, callID...)
				if req == "ACK" {
					out = append(out, "\r\nCSeq: 1 ACK"...)
				} else {
					out = append(out, "\r\nCSeq: 2 BYE"...)
				}
				out = append(out, "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"...)
				p.conn.WriteToUDP(out, gw)
			}
		case bytes.HasSuffix(cseq, []byte("BYE")):
			if callID := string(header(msg, "Call-ID:")); !done[callID] {
				done[callID] = true
				ended <- struct{}{}
			}
		}
	}
}

// servePBX answers INVITEs with 180 and 200 (SDP) and BYEs with 200.
func (p *rawPeer) servePBX() {
	in := make([]byte, 65536)
	var out []byte
	respond := func(msg []byte, status string, tag, body bool) {
		out = append(out[:0], "SIP/2.0 "...)
		out = append(out, status...)
		for _, name := range []string{"Via:", "From:", "To:", "Call-ID:", "CSeq:"} {
			out = append(out, "\r\n"...)
			out = append(out, name...)
			out = append(out, ' ')
			out = append(out, header(msg, name)...)
			if tag && name == "To:" {
				out = append(out, ";tag=pbx-"...)
				out = append(out, header(msg, "Call-ID:")...)
			}
		}
		out = append(out, "\r\nContact: <sip:pbx@"...)
		out = append(out, p.addr.String()...)
		out = append(out, ">"...)
		if body {
			out = append(out, "\r\nContent-Type: application/sdp\r\nContent-Length: "...)
			out = strconv.AppendInt(out, int64(len(benchSDP)), 10)
			out = append(out, "\r\n\r\n"...)
			out = append(out, benchSDP...)
		} else {
			out = append(out, "\r\nContent-Length: 0\r\n\r\n"...)
		}
	}
	for {
		n, from, err := p.conn.ReadFromUDP(in)
		if err != nil {
			return
		}
		msg := in[:n]
		switch {
		case bytes.HasPrefix(msg, []byte("INVITE ")):
			respond(msg, "180 Ringing", true, false)
			p.conn.WriteToUDP(out, from)
			respond(msg, "200 OK", true, true)
			p.conn.WriteToUDP(out, from)
		case bytes.HasPrefix(msg, []byte("BYE ")):
			respond(msg, "200 OK", false, false)
			p.conn.WriteToUDP(out, from)
		}
	}
}
