//go:build linux

package main

import (
	"bytes"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// TestMain doubles as the relay child: the harness re-executes its own
// binary (here the test binary) with envRelay set.
func TestMain(m *testing.M) {
	if engine := os.Getenv(envRelay); engine != "" {
		if err := relayChild(engine, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

var ratioLine = regexp.MustCompile(`^relay_cpu_per_packet_ratio_vs_rtpengine=(NaN|[0-9]+\.[0-9]{3})$`)

// quick runs the harness in -quick mode and checks the shape of its report
// (no figure is asserted: they depend on the machine).
func quick(t *testing.T, systems string) (lines []string, last string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts relay processes and sends media for a few seconds")
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"-quick", "-systems", systems}, &out, &errOut); err != nil {
		t.Fatalf("relaybench -quick -systems %s: %v\nstdout:\n%s\nstderr:\n%s", systems, err, &out, &errOut)
	}
	lines = strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	last = lines[len(lines)-1]
	if !ratioLine.MatchString(last) {
		t.Errorf("last line = %q, want %s\n%s", last, ratioLine, &out)
	}
	for _, sys := range strings.Split(systems, ",") {
		rows := 0
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 3 && f[0] == "1" && f[1] == "20" && f[2] == sys {
				rows++
			}
		}
		if rows != 1 {
			t.Errorf("%d result rows for %s at 20 streams, want 1\n%s", rows, sys, &out)
		}
	}
	return lines, last
}

func TestQuick(t *testing.T) {
	_, last := quick(t, "goroutine,epoll,direct")
	if want := "relay_cpu_per_packet_ratio_vs_rtpengine=NaN"; last != want {
		t.Errorf("without rtpengine: last line = %q, want %q", last, want)
	}
}

func TestQuickRtpengine(t *testing.T) {
	testenv.Require(t)
	_, last := quick(t, "goroutine,epoll,rtpengine")
	if strings.HasSuffix(last, "NaN") {
		t.Errorf("with rtpengine: last line = %q, want a ratio", last)
	}
}

func TestSDPAddr(t *testing.T) {
	tests := []struct {
		sdp  string
		want string
	}{
		{"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 8\r\n", "127.0.0.1:30000"},
		{"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 30002 RTP/AVP 8\r\nc=IN IP4 127.0.0.2\r\nm=video 30004 RTP/AVP 96\r\nc=IN IP4 127.0.0.3\r\n", "127.0.0.2:30002"},
		{"v=0\nc=IN IP4 127.0.0.1\nm=audio 4000 RTP/AVP 0\n", "127.0.0.1:4000"},
		{"v=0\r\nm=audio 30000 RTP/AVP 8\r\n", ""},
		{"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio x RTP/AVP 8\r\n", ""},
	}
	for _, tt := range tests {
		got, err := sdpAddr([]byte(tt.sdp))
		if tt.want == "" {
			if err == nil {
				t.Errorf("sdpAddr(%q) = %v, want an error", tt.sdp, got)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddrPort(tt.want) {
			t.Errorf("sdpAddr(%q) = %v, %v, want %s", tt.sdp, got, err, tt.want)
		}
	}
}

func TestQuantileAndMedian(t *testing.T) {
	s := newStats()
	if q := s.quantile(0.5); !math.IsNaN(q) {
		t.Errorf("quantile of nothing = %v, want NaN", q)
	}
	for us := range 100 {
		s.add(time.Duration(us) * time.Microsecond)
	}
	s.add(time.Hour)
	if got := s.quantile(0.5); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
	if got := s.quantile(1); got != histMax {
		t.Errorf("p100 = %v, want %d (overflow)", got, histMax)
	}
	if got := median([]float64{3, math.NaN(), 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
	if got := median([]float64{math.NaN()}); !math.IsNaN(got) {
		t.Errorf("median of NaN = %v, want NaN", got)
	}
}

func TestParsePorts(t *testing.T) {
	for in, ok := range map[string]bool{"12000-19999": true, "12001-19999": false, "12000": false, "20000-10000": false, "a-b": false} {
		if _, _, err := parsePorts(in); (err == nil) != ok {
			t.Errorf("parsePorts(%q) error = %v, want ok %v", in, err, ok)
		}
	}
}
