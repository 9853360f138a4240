package b2bua

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// sippLikeValues are header values as SIPp and the gateway send them; the
// fast parsers must take every one without falling back.
var sippLikeValues = map[string][]string{
	"via": {
		"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-0",
		"SIP/2.0/UDP 127.0.0.2:5060;rport;branch=z9hG4bK.abc-DEF_1",
		"SIP/2.0/TCP gw.example.org;branch=z9hG4bK1;received=127.0.0.1;rport=5061",
	},
	"from": {
		"sipp <sip:sipp@127.0.0.1:5061>;tag=123SIPpTag001",
		"<sip:+15551234567@127.0.0.1>;tag=abc",
		`"Alice Example" <sip:alice@example.org>;tag=1`,
		"sip:sipp@127.0.0.1:5061;tag=x",
	},
	"to": {
		"<sip:service@127.0.0.1:5060>",
		"sut <sip:service@127.0.0.1:5060>;tag=456SIPpTag012",
		"<sip:bob@127.0.0.2;user=phone>",
	},
	"contact": {
		"sip:sipp@127.0.0.1:5061",
		"<sip:sipp@127.0.0.1:5061;transport=UDP>",
		"<sip:gw@127.0.0.1:5060;transport=udp>;expires=60",
		"<sips:alice@example.org>;+sip.instance=x",
	},
	"cseq":           {"1 INVITE", "2 BYE", "1 ACK", "2147483647 OPTIONS"},
	"call-id":        {"1-123@127.0.0.1", "cx0123456789abcdef0123456789abcdef"},
	"max-forwards":   {"70", "0", "69"},
	"content-length": {"129", "0"},
}

// oddValues go to sipgo (or must at least agree with it).
var oddValues = map[string][]string{
	"via": {
		"SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1",
		"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK2",
		"SIP/2.0/UDP  127.0.0.1;branch",
		"SIP/2.0/UDP host:;branch=1",
		"SIP/2.0/UDP host;;",
		"SIP/2.0/UDP host;a=1;a=2",
		"SIP / 2.0 / UDP host",
		"SIP/2.0/UDP host;received=::1",
		"SIP/2.0/UDP host;x=\"a;b\"",
		"",
	},
	"from": {
		"SIP:user@HOST",
		"<sip:+1;npdi=yes@127.0.0.1>;tag=1",
		"sip:+1;npdi=yes@127.0.0.1;tag=1",
		`"a \"quoted\" name" <sip:a@b>;tag=1`,
		`"unterminated <sip:a@b>`,
		"<sip:[::1]:5060>;tag=1",
		"<sip:a:pass@b>",
		"<sip:a@b?subject=x>",
		"<sip://a@b>",
		"<sip:a@b>;tag",
		"<sip:a@b>;tag=",
		"<sip:a@b> ;tag=1",
		"<sip:a@b>x",
		"<tel:+15551234567>;tag=1",
		"<sip:*>",
		"*",
		"",
		"<>",
		"<sip:a@b;lr;lr>;tag=1;tag=2",
		"a, b <sip:a@b>",
		"sip:a@b:99999999999",
	},
	"contact": {
		"*",
		"<sip:a@b>, <sip:c@d>",
		`"x,y" <sip:a@b>`,
		"<sip:a@[2001:db8::1]:5060>;expires=3600",
		"sip:a@b;expires=60;q=0.5",
	},
	"cseq":           {"1  INVITE", "4294967296 INVITE", "99999999999 INVITE", "1", " 1 INVITE", "1\tINVITE", "2147483648 INVITE"},
	"call-id":        {"", " x ", "a b", "\u00a0x"},
	"max-forwards":   {"", "-1", "+70", "4294967296", " 70"},
	"content-length": {"", " 129 ", "12a", "4294967295", "4294967296"},
}

// tortureHeaders returns the registered headers of the RFC 4475 messages.
func tortureHeaders(t testing.TB) [][2]string {
	files, err := filepath.Glob("testdata/rfc4475/*.sip")
	if err != nil || len(files) == 0 {
		t.Fatalf("torture messages: %v (%d files)", err, len(files))
	}
	m := fastHeaderParsers()
	var out [][2]string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
		// unfold continuation lines
		head = bytes.ReplaceAll(head, []byte("\r\n "), []byte(" "))
		head = bytes.ReplaceAll(head, []byte("\r\n\t"), []byte(" "))
		for _, line := range strings.Split(string(head), "\r\n")[1:] {
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			name = strings.ToLower(strings.TrimSpace(name))
			if _, ok := m[name]; ok {
				out = append(out, [2]string{name, strings.TrimSpace(value)})
			}
		}
	}
	return out
}

// compareParsers fails t when the fast parser for name and sipgo's differ
// on value, called directly and through ParseHeader (comma lists).
func compareParsers(t *testing.T, fast map[string]sip.HeaderParser, name, value string) {
	t.Helper()
	lname := strings.ToLower(name)
	f, ok := fast[lname]
	if !ok {
		return
	}
	slow := sip.DefaultHeadersParser()[lname]
	fh, ferr := f([]byte(lname), value)
	sh, serr := slow([]byte(lname), value)
	if reflect.TypeOf(fh) != reflect.TypeOf(sh) {
		t.Fatalf("%s: %q: type %T, sipgo %T", name, value, fh, sh)
	}
	if (ferr == nil) != (serr == nil) || ferr != nil && (reflect.TypeOf(ferr) != reflect.TypeOf(serr) || ferr.Error() != serr.Error()) {
		t.Fatalf("%s: %q: error %v, sipgo %v", name, value, ferr, serr)
	}
	if !reflect.DeepEqual(fh, sh) {
		t.Fatalf("%s: %q:\nfast  %#v\nsipgo %#v", name, value, fh, sh)
	}
	line := []byte(name + ": " + value)
	fl, ferr := sip.HeadersParser(fast).ParseHeader(nil, line)
	sl, serr := sip.HeadersParser(sip.DefaultHeadersParser()).ParseHeader(nil, line)
	if (ferr == nil) != (serr == nil) || ferr != nil && ferr.Error() != serr.Error() {
		t.Fatalf("ParseHeader %q: error %v, sipgo %v", line, ferr, serr)
	}
	if !reflect.DeepEqual(fl, sl) {
		t.Fatalf("ParseHeader %q:\nfast  %#v\nsipgo %#v", line, fl, sl)
	}
}

func FuzzHeaderParsers(f *testing.F) {
	for name, vals := range sippLikeValues {
		for _, v := range vals {
			f.Add(name, v)
		}
	}
	for name, vals := range oddValues {
		for _, v := range vals {
			f.Add(name, v)
			if name == "from" {
				f.Add("to", v)
				f.Add("contact", v)
			}
		}
	}
	for _, nv := range tortureHeaders(f) {
		f.Add(nv[0], nv[1])
	}
	for _, alias := range []string{"v", "f", "t", "m", "i", "l", "Via", "FROM"} {
		f.Add(alias, "sipp <sip:sipp@127.0.0.1:5061>;tag=1")
	}
	fast := fastHeaderParsers()
	f.Fuzz(func(t *testing.T, name, value string) {
		compareParsers(t, fast, name, value)
	})
}

// TestHeaderParsersAgree runs the seed values without the fuzzer (go test
// runs the seed corpus of FuzzHeaderParsers too; this names the cases).
func TestHeaderParsersAgree(t *testing.T) {
	fast := fastHeaderParsers()
	for _, set := range []map[string][]string{sippLikeValues, oddValues} {
		for name, vals := range set {
			for _, v := range vals {
				for _, n := range []string{name, "to", "contact", "from"} {
					compareParsers(t, fast, n, v)
				}
			}
		}
	}
	for _, nv := range tortureHeaders(t) {
		compareParsers(t, fast, nv[0], nv[1])
	}
}

// TestHeaderParsersFastPath: the SIPp-like values never reach sipgo's
// parser, every alias is installed, and odd shapes do reach it.
func TestHeaderParsersFastPath(t *testing.T) {
	fastFns := map[string]func(string, sip.HeaderParser) (sip.Header, error){
		"via": fastVia, "from": fastFrom, "to": fastTo, "contact": fastContact,
		"cseq": fastCSeq, "call-id": fastCallID, "max-forwards": fastMaxForwards,
		"content-length": fastContentLength,
	}
	for name, vals := range sippLikeValues {
		for _, v := range vals {
			fell := false
			slow := func([]byte, string) (sip.Header, error) { fell = true; return nil, nil }
			h, err := fastFns[name](v, slow)
			if fell || err != nil || h == nil {
				t.Errorf("%s: %q: fell back to sipgo (%v)", name, v, err)
			}
		}
	}
	for _, c := range [][2]string{
		{"via", "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1"},
		{"from", `"a \"q\"" <sip:a@b>`},
		{"contact", "<sip:a@b>, <sip:c@d>"},
		{"to", "<tel:+1555>"},
	} {
		fell := false
		slow := func([]byte, string) (sip.Header, error) { fell = true; return nil, nil }
		fastFns[c[0]](c[1], slow)
		if !fell {
			t.Errorf("%s: %q: did not fall back to sipgo", c[0], c[1])
		}
	}
	m := fastHeaderParsers()
	def := sip.DefaultHeadersParser()
	for _, n := range []string{"via", "v", "from", "f", "to", "t", "contact", "m", "cseq", "call-id", "i", "max-forwards", "content-length", "l"} {
		if reflect.ValueOf(m[n]).Pointer() == reflect.ValueOf(def[n]).Pointer() {
			t.Errorf("%s: fast parser not installed", n)
		}
	}
	if len(m) != len(def) {
		t.Errorf("fast map has %d parsers, sipgo's %d", len(m), len(def))
	}
}

// sippMessages: one call as SIPp's uac/uas scenarios send it.
var sippMessages = func() [][]byte {
	const sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	via := "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-0\r\n"
	from := "From: sipp <sip:sipp@127.0.0.1:5061>;tag=123SIPpTag001\r\n"
	to := "To: <sip:service@127.0.0.1:5060>\r\n"
	toTag := "To: <sip:service@127.0.0.1:5060>;tag=456SIPpTag012\r\n"
	cid := "Call-ID: 1-123@127.0.0.1\r\n"
	msgs := []string{
		"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" + via + from + to + cid +
			"CSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: " + itoa(len(sdp)) + "\r\n\r\n" + sdp,
		"SIP/2.0 180 Ringing\r\n" + via + from + toTag + cid + "CSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5062;transport=UDP>\r\nContent-Length: 0\r\n\r\n",
		"SIP/2.0 200 OK\r\n" + via + from + toTag + cid + "CSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5062;transport=UDP>\r\nContent-Type: application/sdp\r\nContent-Length: " + itoa(len(sdp)) + "\r\n\r\n" + sdp,
		"ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n" + "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-5\r\n" + from + toTag + cid +
			"CSeq: 1 ACK\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n",
		"BYE sip:service@127.0.0.1:5060 SIP/2.0\r\n" + "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-7\r\n" + from + toTag + cid +
			"CSeq: 2 BYE\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n",
		"SIP/2.0 200 OK\r\n" + "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-123-1-7\r\n" + from + toTag + cid + "CSeq: 2 BYE\r\nContact: <sip:127.0.0.1:5062;transport=UDP>\r\nContent-Length: 0\r\n\r\n",
	}
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = []byte(m)
	}
	return out
}()

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// TestSIPpMessagesParseAlike: the whole messages parse to equal headers.
func TestSIPpMessagesParseAlike(t *testing.T) {
	fast, slow := newFastParser(), sip.NewParser()
	for _, data := range sippMessages {
		fm, ferr := fast.ParseSIP(data)
		sm, serr := slow.ParseSIP(data)
		if ferr != nil || serr != nil {
			t.Fatalf("parse: %v / %v", ferr, serr)
		}
		fh, sh := fm.(interface{ Headers() []sip.Header }).Headers(), sm.(interface{ Headers() []sip.Header }).Headers()
		if len(fh) < 7 || !reflect.DeepEqual(fh, sh) {
			t.Fatalf("headers differ:\n%v\n%v", fh, sh)
		}
		if fm.String() != sm.String() {
			t.Fatalf("rendered differently:\n%s\n%s", fm, sm)
		}
	}
}

// BenchmarkParseSIPpCall parses the six messages of a SIPp call.
func BenchmarkParseSIPpCall(b *testing.B) {
	for _, bc := range []struct {
		name string
		p    *sip.Parser
	}{{"sipgo", sip.NewParser()}, {"fast", newFastParser()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				for _, data := range sippMessages {
					if _, err := bc.p.ParseSIP(data); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
