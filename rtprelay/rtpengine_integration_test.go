package rtprelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// softphoneSDP is what a desktop softphone offers: G.711 both laws and
// DTMF, 20 ms, RTCP on port+1 and ICE host candidates. An answer to an
// offer without ICE has no ICE attributes (RFC 8839): answerSDP.
func softphoneSDP(user string, port int) []byte {
	p, p1 := strconv.Itoa(port), strconv.Itoa(port+1)
	return []byte("v=0\r\n" +
		"o=" + user + " 3912345678 3912345678 IN IP4 127.0.0.1\r\n" +
		"s=Talk\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"a=ice-ufrag:Xk9f\r\n" +
		"a=ice-pwd:4ZYnFJ3Lg0rUcUxpT8Q2hYc0\r\n" +
		"m=audio " + p + " RTP/AVP 8 0 101\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\n" +
		"a=fmtp:101 0-15\r\n" +
		"a=ptime:20\r\n" +
		"a=rtcp:" + p1 + "\r\n" +
		"a=candidate:1 1 UDP 2130706431 127.0.0.1 " + p + " typ host\r\n" +
		"a=candidate:1 2 UDP 2130706430 127.0.0.1 " + p1 + " typ host\r\n" +
		"a=sendrecv\r\n")
}

func answerSDP(user string, port int) []byte {
	var out []byte
	for l := range bytes.Lines(softphoneSDP(user, port)) {
		if !bytes.HasPrefix(l, []byte("a=ice-")) && !bytes.HasPrefix(l, []byte("a=candidate")) {
			out = append(out, l...)
		}
	}
	return out
}

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sdpMedia returns the audio port and the connection address of an SDP,
// checking that both lie where rtpengine allocates.
func sdpMedia(t *testing.T, e *testenv.Rtpengine, sdp []byte) netip.AddrPort {
	t.Helper()
	p, err := parseSDP(sdp)
	if err != nil || len(p.media) != 1 {
		t.Fatalf("rtpengine SDP %q: %v", sdp, err)
	}
	m := p.media[0]
	if int(m.port) < e.PortMin || int(m.port) > e.PortMax || m.addr != loopback {
		t.Errorf("rtpengine SDP media at %v:%d, want 127.0.0.1 and a port in %d..%d\n%s", m.addr, m.port, e.PortMin, e.PortMax, sdp)
	}
	for _, bad := range []string{"a=candidate", "a=ice-ufrag", "a=ice-pwd"} {
		if bytes.Contains(sdp, []byte(bad)) {
			t.Errorf("rtpengine SDP keeps %s (ICE: remove)\n%s", bad, sdp)
		}
	}
	for _, keep := range []string{"RTP/AVP 8 0 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv"} {
		if !bytes.Contains(sdp, []byte(keep)) {
			t.Errorf("rtpengine SDP lost %q\n%s", keep, sdp)
		}
	}
	return netip.AddrPortFrom(m.addr, uint16(m.port))
}

func sdpMediaPort(t *testing.T, sdp []byte) netip.AddrPort {
	t.Helper()
	p, err := parseSDP(sdp)
	if err != nil || len(p.media) == 0 {
		t.Fatalf("SDP %q: %v", sdp, err)
	}
	return netip.AddrPortFrom(p.media[0].addr, uint16(p.media[0].port))
}

// sendRTP sends n PCMA packets of 20 ms from c to dst at the real pace
// (rtpengine drops sockets that flood).
func sendRTP(t *testing.T, c *net.UDPConn, dst netip.AddrPort, ssrc uint32, n int) {
	pkt := make([]byte, 12+160)
	pkt[0], pkt[1] = 0x80, 8
	binary.BigEndian.PutUint32(pkt[8:], ssrc)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := range n {
		binary.BigEndian.PutUint16(pkt[2:], uint16(1000+i))
		binary.BigEndian.PutUint32(pkt[4:], uint32(160*i))
		if _, err := c.WriteToUDPAddrPort(pkt, dst); err != nil {
			t.Errorf("send RTP: %v", err)
			return
		}
		<-tick.C
	}
}

// recvRTP counts the RTP packets with ssrc that reach c until n arrived or
// a second passes without any.
func recvRTP(c *net.UDPConn, ssrc uint32, n int) (got int) {
	buf := make([]byte, 2048)
	for got < n {
		c.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return got
		}
		if k >= 12 && binary.BigEndian.Uint32(buf[8:]) == ssrc {
			got++
		}
	}
	return got
}

func TestRtpengineBackend(t *testing.T) {
	e := testenv.StartRtpengine(t)
	ng, err := NewNGClient(e.NGAddr, NGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Close()
	ctx := context.Background()
	if err := ng.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v", err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	var media Media = NewRtpengine(ng, slog.New(slog.DiscardHandler), m)

	caller, callee := listenLoopback(t), listenLoopback(t)
	callerPort := caller.LocalAddr().(*net.UDPAddr).Port
	calleePort := callee.LocalAddr().(*net.UDPAddr).Port

	toCallee, err := media.Offer(ctx, "call-1@pbx", "tag-alice", softphoneSDP("alice", callerPort))
	if err != nil {
		t.Fatalf("Offer = %v", err)
	}
	calleeSends := sdpMedia(t, e, toCallee)
	toCaller, err := media.Answer(ctx, "call-1@pbx", "tag-bob", answerSDP("bob", calleePort))
	if err != nil {
		t.Fatalf("Answer = %v", err)
	}
	callerSends := sdpMedia(t, e, toCaller)
	if calleeSends == callerSends {
		t.Fatalf("both legs got %v", calleeSends)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 1 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 1", got)
	}

	// 20 packets each way, 50 packets/s.
	const n = 20
	const ssrcA, ssrcB = 0xA11CE, 0xB0B
	gotAtCallee, gotAtCaller := make(chan int, 1), make(chan int, 1)
	go func() { gotAtCallee <- recvRTP(callee, ssrcA, n) }()
	go func() { gotAtCaller <- recvRTP(caller, ssrcB, n) }()
	done := make(chan struct{})
	go func() { defer close(done); sendRTP(t, callee, calleeSends, ssrcB, n) }()
	sendRTP(t, caller, callerSends, ssrcA, n)
	<-done
	if got := <-gotAtCallee; got != n {
		t.Errorf("callee received %d of %d packets from the caller", got, n)
	}
	if got := <-gotAtCaller; got != n {
		t.Errorf("caller received %d of %d packets from the callee", got, n)
	}

	st, err := media.Query("call-1@pbx")
	if err != nil {
		t.Fatalf("Query = %v", err)
	}
	t.Logf("stats: %+v", st)
	for side, want := range []struct {
		tag  string
		peer int
	}{{"tag-alice", callerPort}, {"tag-bob", calleePort}} {
		l := st.Legs[side]
		if l.Tag != want.tag || len(l.Streams) != 1 {
			t.Fatalf("Legs[%d] = %+v, want tag %s and one stream", side, l, want.tag)
		}
		s := l.Streams[0]
		if s.Packets != n || s.Bytes != n*172 || s.SentPackets != n || s.Media != "audio" ||
			int(s.Peer.Port()) != want.peer || s.LocalPort < e.PortMin || s.LocalPort > e.PortMax || s.LastPacket < 0 {
			t.Errorf("Legs[%d].Streams[0] = %+v, want %d packets of 172 bytes each way, peer port %d", side, s, n, want.peer)
		}
	}
	if !st.Answered || st.OnHold {
		t.Errorf("Query = answered %v, on hold %v, want answered and not on hold", st.Answered, st.OnHold)
	}
	if int(st.Legs[0].Streams[0].LocalPort) != int(callerSends.Port()) {
		t.Errorf("Legs[0] local port %d, want the port in the SDP sent to the caller, %d", st.Legs[0].Streams[0].LocalPort, callerSends.Port())
	}

	// The callee puts the call on hold with a re-INVITE: rtpengine keeps
	// its ports and sees the hold.
	hold := bytes.Replace(answerSDP("bob", calleePort), []byte("a=sendrecv"), []byte("a=sendonly"), 1)
	toCaller2, err := media.Offer(ctx, "call-1@pbx", "tag-bob", hold)
	if err != nil {
		t.Fatalf("re-offer from the callee = %v", err)
	}
	if got := sdpMediaPort(t, toCaller2); got != callerSends {
		t.Errorf("re-offer moved the caller's media to %v, want %v", got, callerSends)
	}
	if !bytes.Contains(toCaller2, []byte("a=sendonly")) {
		t.Errorf("re-offer to the caller lost a=sendonly:\n%s", toCaller2)
	}
	resume := bytes.Replace(answerSDP("alice", callerPort), []byte("a=sendrecv"), []byte("a=recvonly"), 1)
	if _, err := media.Answer(ctx, "call-1@pbx", "tag-alice", resume); err != nil {
		t.Fatalf("answer from the caller = %v", err)
	}
	if st, err := media.Query("call-1@pbx"); err != nil || !st.OnHold {
		t.Errorf("Query on hold = %+v, %v, want OnHold", st, err)
	}

	if err := media.Delete("call-1@pbx"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := media.Query("call-1@pbx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query after Delete = %v, want ErrNotFound", err)
	}
	if _, err := ng.Query(ctx, "call-1@pbx"); !errors.Is(mapNGError(err), ErrNotFound) {
		t.Errorf("rtpengine query after Delete = %v, want Unknown call-id", err)
	}
	if err := media.Delete("call-1@pbx"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 0 {
		t.Errorf("cusax_rtp_sessions_active after Delete = %v, want 0", got)
	}
}

func TestRtpengineErrors(t *testing.T) {
	e := testenv.StartRtpengine(t)
	ng, err := NewNGClient(e.NGAddr, NGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Close()
	ctx := context.Background()
	m := NewMetrics(prometheus.NewRegistry())
	r := NewRtpengine(ng, slog.New(slog.DiscardHandler), m)
	if _, err := r.Offer(ctx, "bad", "ft", []byte("this is not SDP")); !errors.Is(err, ErrBadSDP) {
		t.Errorf("Offer(garbage) = %v, want ErrBadSDP", err)
	}
	if _, err := r.Answer(ctx, "bad", "tt", softphoneSDP("bob", 4000)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Answer after a failed offer = %v, want ErrNotFound", err)
	}
	if _, err := r.Query("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query(unknown) = %v, want ErrNotFound", err)
	}
	// The call vanishes at rtpengine (its media timeout): Query tells.
	if _, err := r.Offer(ctx, "gone", "ft", softphoneSDP("alice", 4000)); err != nil {
		t.Fatal(err)
	}
	if err := ng.Delete(ctx, "gone", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Query("gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Query(ended at rtpengine) = %v, want ErrNotFound", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 0 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 0", got)
	}
	s, err := ng.Statistics(ctx)
	if err != nil {
		t.Fatalf("Statistics = %v", err)
	}
	if _, ok := s["statistics"].(map[string]any); !ok {
		t.Errorf("Statistics = %v, want a statistics dictionary", s)
	}
}

// TestRtpengineWatchIntegration: a call that rtpengine ends by itself (here
// deleted behind the backend's back, as its --timeout would) is reported.
func TestRtpengineWatchIntegration(t *testing.T) {
	e := testenv.StartRtpengine(t)
	ng, err := NewNGClient(e.NGAddr, NGOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Close()
	m := NewMetrics(prometheus.NewRegistry())
	r := NewRtpengine(ng, slog.New(slog.DiscardHandler), m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, id := range []string{"stays", "ends"} {
		if _, err := r.Offer(ctx, id, "A", softphoneSDP("alice", 4000)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Answer(ctx, id, "B", answerSDP("bob", 4100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ng.Delete(ctx, "ends", ""); err != nil {
		t.Fatal(err)
	}
	gone := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, 20*time.Millisecond, func(id string) { gone <- id }) }()
	if id := <-gone; id != "ends" {
		t.Errorf("onGone(%q), want ends", id)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch = %v", err)
	}
	if got := testutil.ToFloat64(m.Sessions); got != 1 {
		t.Errorf("cusax_rtp_sessions_active = %v, want 1", got)
	}
	if _, err := r.Query("stays"); err != nil {
		t.Errorf("Query(stays) = %v", err)
	}
}
