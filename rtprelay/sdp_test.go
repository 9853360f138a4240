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
			// Whatever path rewrote it, the output must be SDP pion accepts;
			// the pion path must agree with the canonical one, and the
			// line-based fallback with both.
			var sd sdp.SessionDescription
			if err := sd.Unmarshal(got); err != nil {
				t.Errorf("pion rejects our output: %v", err)
			}
			if p.canon != "" {
				checkCanonical(t, in)
			}
			if p.canon != "" || p.pion != nil {
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
		if p.canon == "" || m.port != 49170 || !m.anchored || m.addr != netip.MustParseAddr("192.0.2.10") || m.clock != 8000 || !m.active() {
			t.Errorf("basic = %+v (canonical %v)", m, p.canon != "")
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
		if p.pion != nil || p.canon != "" {
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
	addSDPSeeds(f)
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
			if p.media[i].anchored && int(m.port) != 30000+4*i {
				t.Fatalf("m-line %d port %d, want %d\n%q", i, m.port, 30000+4*i, out)
			}
		}
		if allAnchored && (bytes.Contains(out, []byte("\na=candidate:")) || bytes.Contains(out, []byte("\na=ice-pwd:"))) {
			t.Fatalf("ICE attribute survived:\n%q", out)
		}
	})
}

// checkCanonical fails t unless in, which parseSDP took on the canonical
// path, parses on the pion path to the same streams and rewrites to the
// same bytes, for a plan anchoring every stream it can and for one
// anchoring none.
func checkCanonical(t *testing.T, in []byte) {
	t.Helper()
	p, err := parseSDP(in)
	if err != nil || p.canon == "" {
		t.Fatalf("parseSDP(%q): canonical %v, err %v", in, p != nil && p.canon != "", err)
	}
	q, err := parseNonCanonical(in)
	if err != nil {
		t.Fatalf("canonical SDP the other paths reject: %v\n%q", err, in)
	}
	if q.pion == nil {
		t.Fatalf("canonical SDP pion rejects:\n%q", in)
	}
	if len(p.media) != len(q.media) {
		t.Fatalf("canonical path: %d m-lines, pion %d\n%q", len(p.media), len(q.media), in)
	}
	for i := range p.media {
		a, b := p.media[i], q.media[i]
		a.hasConn = false
		if a != b {
			t.Fatalf("m-line %d: canonical %+v, pion %+v\n%q", i, a, b, in)
		}
	}
	for _, plan := range []func(*parsedSDP) *rewritePlan{testPlan, func(p *parsedSDP) *rewritePlan {
		return &rewritePlan{addr: netip.MustParseAddr("2001:db8::7"), sessID: 9, sessVer: 3, media: make([]mediaPlan, len(p.media))}
	}} {
		got, err := p.rewrite(plan(p))
		if err != nil {
			t.Fatal(err)
		}
		q, _ := parseNonCanonical(in) // rewritePion changes what it rewrites
		want, err := q.rewrite(plan(q))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("canonical rewrite of\n%q\n=\n%q\npion's\n%q", in, got, want)
		}
	}
}

// TestCanonicalDeclines: SDP pion would render differently from how it
// reads, or would reject, must not take the canonical path.
func TestCanonicalDeclines(t *testing.T) {
	base := "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
	for _, in := range []string{
		strings.ReplaceAll(base+"m=audio 4000 RTP/AVP 0\r\n", "\r\n", "\n"),
		base + "m=audio 4000  RTP/AVP 0\r\n",
		base + "m=audio 4000 RTP/AVP 0 \r\n",
		base + "m=audio 4000 RTP/AVP\r\n",
		base + "m=audio 04000 RTP/AVP 0\r\n",
		base + "m=audio 4000/2/3 RTP/AVP 0\r\n",
		base + "m=audio 4000\tRTP/AVP 0\r\n",
		base + "m=image 4000 udptl t38\r\n",
		base + "m=audio 4000 RTP/AVP 0\r\na=sendrecv:\r\n",
		base + "m=audio 4000 RTP/AVP 0\r\na=ptime:20\r\nc=IN IP4 192.0.2.2\r\n",
		base + "m=audio 4000 RTP/AVP 0\r\nb=AS:064\r\n",
		base + "m=audio 4000 RTP/AVP 0\r\nk=prompt\r\n",
		base + "m=audio 4000 RTP/AVP 0",
		strings.Replace(base, "t=0 0", "t=00 0", 1),
		strings.Replace(base, "s=-\r\n", "s=-\r\nu=http://x/\r\n", 1),
		strings.Replace(base, "s=-\r\n", "", 1),
		strings.Replace(base, "v=0", "v=00", 1),
		strings.Replace(base, "t=0 0\r\n", "", 1) + "m=audio 4000 RTP/AVP 0\r\n",
		strings.Replace(base, "c=IN IP4 192.0.2.1\r\nt=0 0\r\n", "t=0 0\r\nc=IN IP4 192.0.2.1\r\n", 1),
		strings.Replace(base, "o=- 1 1 IN IP4 192.0.2.1", "o=- 1 1 IN IP4", 1),
	} {
		if new(parsedSDP).parseCanonical([]byte(in)) {
			t.Errorf("parseCanonical(%q) took it", in)
		}
	}
	if !new(parsedSDP).parseCanonical([]byte(base + "m=audio 4000 RTP/AVP 0\r\n")) {
		t.Error("parseCanonical declined the base case")
	}
}

// FuzzCanonicalSDP: whatever the canonical path takes, pion takes, to the
// same streams and the same rewritten bytes.
func FuzzCanonicalSDP(f *testing.F) {
	addSDPSeeds(f)
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\ni=x\r\na=rtcp\r\nm=video 5/2 RTP/AVP 96\r\nc=IN IP4 192.0.2.2\r\nb=AS:1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := parseSDP(in)
		if err != nil || p.canon == "" {
			return
		}
		checkCanonical(t, in)
	})
}

// addSDPSeeds seeds a fuzz target with the golden SDP files.
func addSDPSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.sdp")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
