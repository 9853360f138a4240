package rtprelay

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

var testAdvertise = netip.MustParseAddr("203.0.113.7")

// testPlan anchors every anchored m-line i at 30000+4i.
func testPlan(p *parsedSDP) *rewritePlan {
	plan := &rewritePlan{addr: testAdvertise, sessID: 1234, sessVer: 1, media: make([]mediaPlan, len(p.media))}
	for i, m := range p.media {
		if m.anchored {
			plan.media[i] = mediaPlan{rtp: 30000 + 4*i, rtcp: 30001 + 4*i}
		}
	}
	return plan
}

func TestRewriteGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.sdp")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.sdp: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".sdp")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, err := parseSDP(in)
			if err != nil {
				t.Fatalf("parseSDP: %v", err)
			}
			got, err := p.rewrite(testPlan(p))
			if err != nil {
				t.Fatalf("rewrite: %v", err)
			}
			golden := strings.TrimSuffix(f, ".sdp") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rewrite(%s) =\n%s\nwant\n%s", f, got, want)
			}
			// Whatever path rewrote it, the output must be SDP pion accepts,
			// and the line-based fallback must agree with pion.
			var sd sdp.SessionDescription
			if err := sd.Unmarshal(got); err != nil {
				t.Errorf("pion rejects our output: %v", err)
			}
			if p.pion != nil {
				lp, err := parseLines(in)
				if err != nil {
					t.Fatalf("parseLines: %v", err)
				}
				if lgot := lp.rewriteLines(testPlan(lp)); !bytes.Equal(lgot, got) {
					t.Errorf("line-based rewrite differs from pion's:\n%s\nwant\n%s", lgot, got)
				}
			}
		})
	}
}

func TestParseSDPRules(t *testing.T) {
	read := func(name string) *parsedSDP {
		t.Helper()
		b, err := os.ReadFile("testdata/" + name + ".sdp")
		if err != nil {
			t.Fatal(err)
		}
		p, err := parseSDP(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("basic", func(t *testing.T) {
		p := read("basic")
		m := p.media[0]
		if p.pion == nil || m.port != 49170 || !m.anchored || m.addr != netip.MustParseAddr("192.0.2.10") || m.clock != 8000 || !m.active() {
			t.Errorf("basic = %+v (pion %v)", m, p.pion != nil)
		}
	})
	t.Run("hold", func(t *testing.T) {
		m := read("hold-zero").media[0]
		if !m.hold || m.dir != dirInactive || m.active() {
			t.Errorf("hold-zero = %+v, want hold, inactive", m)
		}
	})
	t.Run("declined", func(t *testing.T) {
		p := read("declined-video-sendonly")
		if p.media[0].dir != dirSendOnly || p.media[1].anchored || p.media[1].port != 0 || p.media[1].clock != 90000 {
			t.Errorf("declined = %+v", p.media)
		}
	})
	t.Run("mux and rtcp", func(t *testing.T) {
		p := read("webrtc-ice-mux")
		if m := p.media[0]; !m.mux || m.rtcpPort != 9 || m.clock != 48000 {
			t.Errorf("webrtc audio = %+v", m)
		}
		s := read("srtp-crypto-rtcp")
		if m := s.media[0]; m.rtcpPort != 16391 || m.rtcpAddr != netip.MustParseAddr("192.0.2.41") || m.mux {
			t.Errorf("srtp audio = %+v", m)
		}
	})
	t.Run("fallback", func(t *testing.T) {
		p := read("sloppy-lf")
		if p.pion != nil {
			t.Fatal("pion accepted sloppy-lf.sdp; the test needs an SDP it rejects")
		}
		if m := p.media[0]; m.addr != netip.MustParseAddr("192.0.2.60") || m.rtcpPort != 7079 || m.port != 7078 {
			t.Errorf("sloppy = %+v", m)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		p := read("msrp-and-audio")
		if p.media[0].anchored || !p.media[1].anchored {
			t.Errorf("msrp-and-audio anchored = %v, %v; want false, true", p.media[0].anchored, p.media[1].anchored)
		}
	})
}

func TestParseSDPRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"hello",
		"o=x 1 1 IN IP4 1.2.3.4\r\nv=0\r\n",
		"v=0\r\nm=audio\r\n",
		"v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
		"v=0\r\nm=audio x RTP/AVP 0\r\n",
		"v=0\r\nc=XX\r\n",
		"v=0\r\n=\r\n",
		strings.Repeat("a", maxSDP+1),
	} {
		if _, err := parseSDP([]byte(in)); !errors.Is(err, ErrBadSDP) {
			t.Errorf("parseSDP(%.30q) = %v, want ErrBadSDP", in, err)
		}
	}
}

func TestSetOrigin(t *testing.T) {
	in := []byte("v=0\r\no=- 5 1 IN IP4 203.0.113.7\r\ns=-\r\n")
	want := "v=0\r\no=- 5 2 IN IP4 203.0.113.7\r\ns=-\r\n"
	if got := setOrigin(in, 5, 2, testAdvertise); string(got) != want {
		t.Errorf("setOrigin = %q, want %q", got, want)
	}
	if got := withoutOrigin(in); string(got) != "s=-\r\n" {
		t.Errorf("withoutOrigin = %q", got)
	}
}

func FuzzRewriteSDP(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.sdp")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("v=0\nm=audio 1 RTP/AVP\nc=IN IP4 ::1\na=rtcp:"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := parseSDP(in)
		if err != nil {
			if !errors.Is(err, ErrBadSDP) {
				t.Fatalf("parseSDP error %v does not wrap ErrBadSDP", err)
			}
			return
		}
		out, err := p.rewrite(testPlan(p))
		if err != nil {
			return
		}
		q, err := parseSDP(out)
		if err != nil {
			t.Fatalf("our output does not parse: %v\n%q", err, out)
		}
		if len(q.media) != len(p.media) {
			t.Fatalf("output has %d m-lines, input %d", len(q.media), len(p.media))
		}
		allAnchored := true
		for i, m := range q.media {
			allAnchored = allAnchored && p.media[i].anchored
			if p.media[i].anchored && m.port != 30000+4*i {
				t.Fatalf("m-line %d port %d, want %d\n%q", i, m.port, 30000+4*i, out)
			}
		}
		if allAnchored && (bytes.Contains(out, []byte("\na=candidate:")) || bytes.Contains(out, []byte("\na=ice-pwd:"))) {
			t.Fatalf("ICE attribute survived:\n%q", out)
		}
	})
}
