package b2bua

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/emiago/sipgo/sip"
)

var updateCallInfo = flag.Bool("update-callinfo", false, "rewrite testdata/callinfo/*.out.sip from stripImpp's output")

func parseRequest(t testing.TB, raw []byte) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage(raw)
	if err != nil {
		t.Fatalf("ParseMessage: %v", err)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("ParseMessage gave %T, want *sip.Request", msg)
	}
	return req
}

func mustRequest(t testing.TB, lines ...string) *sip.Request {
	t.Helper()
	head := []string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-t",
		"From: <sip:alice@example.com>;tag=a1",
		"To: <sip:bob@example.com>",
		"Call-ID: t@192.0.2.10",
		"CSeq: 1 INVITE",
	}
	all := append(head, lines...)
	all = append(all, "Content-Length: 0", "", "")
	return parseRequest(t, []byte(strings.Join(all, "\r\n")))
}

// TestStripImppGolden runs stripImpp on testdata/callinfo/NAME.in.sip and
// compares the serialised result with NAME.out.sip (-update-callinfo
// rewrites those).
func TestStripImppGolden(t *testing.T) {
	tests := []struct {
		name    string
		claims  []string
		removed int
		contact string // req.Contact() afterwards; "" for nil
	}{
		{"jitsi", []string{"alice@example.com"}, 1, "sip:alice@192.0.2.10:5062;transport=udp"},
		{"mixed-line", []string{"mallory@example.com"}, 1, "sip:alice@192.0.2.10:5062"},
		{"quoted-commas", []string{"eve@example.com"}, 1, "sip:alice@192.0.2.10:5062"},
		{"multi-line", []string{"one@example.com", "two@example.com", "three@example.com"}, 3, "sip:alice@192.0.2.10:5062"},
		{"contact-xmpp", []string{"alice@example.com", "alice@example.com"}, 2, "sip:alice@192.0.2.10:5062"},
		{"contact-xmpp-first", []string{"mallory@example.com"}, 1, "sip:alice@192.0.2.10:5062"},
		{"invalid-claims", []string{"alïce@example.com"}, 7, "sip:alice@192.0.2.10:5062"},
		{"untouched", nil, 0, "sip:alice@192.0.2.10:5062"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", "callinfo", tt.name+".in.sip"))
			if err != nil {
				t.Fatal(err)
			}
			req := parseRequest(t, in)
			claims, removed := stripImpp(req)
			if !slices.Equal(claims, tt.claims) || removed != tt.removed {
				t.Errorf("stripImpp(%s) = %q, %d, want %q, %d", tt.name, claims, removed, tt.claims, tt.removed)
			}
			got := ""
			if c := req.Contact(); c != nil {
				got = c.Address.String()
			}
			if got != tt.contact {
				t.Errorf("req.Contact() after stripImpp(%s) = %q, want %q", tt.name, got, tt.contact)
			}
			if c, ok := sipContact(req); !ok || c.Address.String() != tt.contact {
				t.Errorf("sipContact after stripImpp(%s) = %v, %v, want %q", tt.name, c, ok, tt.contact)
			}
			out := []byte(req.String())
			golden := filepath.Join("testdata", "callinfo", tt.name+".out.sip")
			if *updateCallInfo {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update-callinfo to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("stripImpp(%s) serialised:\n%s\nwant (%s):\n%s", tt.name, out, golden, want)
			}
			// The output parses again and has nothing left to strip.
			again := parseRequest(t, out)
			if c, n := stripImpp(again); n != 0 {
				t.Errorf("stripImpp of %s.out.sip = %q, %d, want nothing removed", tt.name, c, n)
			}
		})
	}
}

func TestSplitCallInfo(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"<a>;purpose=icon", []string{"<a>;purpose=icon"}},
		{"<a>, <b>", []string{"<a>", "<b>"}},
		{"<http://x/a,b>;purpose=info, <c>", []string{"<http://x/a,b>;purpose=info", "<c>"}},
		{`<a>;p="x, y", <b>`, []string{`<a>;p="x, y"`, "<b>"}},
		{`<a>;p="x\", y", <b>`, []string{`<a>;p="x\", y"`, "<b>"}},
		{`<a>;p="x\\", <b>`, []string{`<a>;p="x\\"`, "<b>"}},
		{`<a",b>, <c>`, []string{`<a",b>`, "<c>"}}, // quotes mean nothing inside <>
		{`<a>;p="unclosed, <b>`, []string{`<a>;p="unclosed, <b>`}},
		{`<unclosed, <b>`, []string{`<unclosed, <b>`}},
		{`a>, b`, []string{"a>", "b"}},
	}
	for _, tt := range tests {
		if got := splitCallInfo(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitCallInfo(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseCallInfo(t *testing.T) {
	tests := []struct {
		in   string
		want callInfo
	}{
		{"<xmpp:a@example.com>;purpose=impp", callInfo{"xmpp:a@example.com", true}},
		{"< xmpp:a@example.com >  ;  PURPOSE = IMPP ", callInfo{"xmpp:a@example.com", true}},
		{`<xmpp:a@example.com>;purpose="impp"`, callInfo{"xmpp:a@example.com", true}},
		{`<xmpp:a@example.com>;purpose=icon;purpose=impp`, callInfo{"xmpp:a@example.com", true}},
		{"<xmpp:a@example.com>;purpose=icon", callInfo{"xmpp:a@example.com", false}},
		{"<xmpp:a@example.com>;purpose=impps", callInfo{"xmpp:a@example.com", false}},
		{"<xmpp:a@example.com>;xpurpose=impp", callInfo{"xmpp:a@example.com", false}},
		{`<xmpp:a@example.com>;note="x;purpose=impp"`, callInfo{"xmpp:a@example.com", false}},
		{"<http://x/;purpose=impp>", callInfo{"http://x/;purpose=impp", false}}, // a URI param
		{"<xmpp:a@example.com;purpose=impp", callInfo{"", true}},                // unclosed
		{"xmpp:a@example.com;purpose=impp", callInfo{"", true}},                 // no <>
		{"<xmpp:a@example.com>", callInfo{"xmpp:a@example.com", false}},
	}
	for _, tt := range tests {
		if got := parseCallInfo(tt.in); got != tt.want {
			t.Errorf("parseCallInfo(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestXMPPClaim(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for none
	}{
		{"xmpp:alice@example.com", "alice@example.com"},
		{"XMPP:Alice@EXAMPLE.com", "alice@example.com"},
		{"xmpp:alice@example.com/phone", "alice@example.com"},
		{"xmpp:alice@example.com?message;subject=hi", "alice@example.com"},
		{"xmpp:alice@example.com#frag", "alice@example.com"},
		{"xmpp://gw.example.com/alice@example.com?call", "alice@example.com"},
		{"xmpp:j%C3%BCrgen@example.com", "jürgen@example.com"},
		{"xmpp:a%23b@example.com", "a#b@example.com"},
		{"xmpp:example.com", ""},
		{"xmpp:@example.com", ""},
		{"xmpp:%ZZ@example.com", ""},
		{"xmpp://gw.example.com", ""},
		{"xmpp:a<b>@example.com", ""},
		{"xmpp:x<bob@example.com>", ""},
		{"xmpp:a b@example.com", ""},
		{"sip:alice@example.com", ""},
		{"tel:+15551230001", ""},
		{"xmpp:", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := xmppClaim(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("xmppClaim(%q) = %q, %v, want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestStampImpp(t *testing.T) {
	tests := []struct {
		jid  string
		want string // the Call-Info value; "" for none stamped
	}{
		{"alice@example.com", "<xmpp:alice@example.com>;purpose=impp"},
		{"Alice@Example.COM", "<xmpp:alice@example.com>;purpose=impp"},
		{"xmpp:alice@example.com", "<xmpp:alice@example.com>;purpose=impp"},
		{"jürgen@example.com", "<xmpp:j%C3%BCrgen@example.com>;purpose=impp"},
		{"a#b?c,d;e@example.com", "<xmpp:a%23b%3Fc%2Cd%3Be@example.com>;purpose=impp"},
		{"o!$()*+=k@example.com", "<xmpp:o!$()*+=k@example.com>;purpose=impp"},
		{"alice@example.com/phone", ""}, // not bare
		{"example.com", ""},
		{"", ""},
		{"a b@example.com", ""},
	}
	for _, tt := range tests {
		req := mustRequest(t, "Contact: <sip:alice@192.0.2.10>")
		stampImpp(req, tt.jid)
		hs := req.GetHeaders("Call-Info")
		switch {
		case tt.want == "" && len(hs) != 0:
			t.Errorf("stampImpp(%q) added %v, want nothing", tt.jid, hs)
		case tt.want != "" && (len(hs) != 1 || hs[0].Value() != tt.want):
			t.Errorf("stampImpp(%q) added %v, want one Call-Info %q", tt.jid, hs, tt.want)
		}
		if tt.want == "" {
			continue
		}
		// The stamp survives the wire and is what stripImpp reads back.
		again := parseRequest(t, []byte(req.String()))
		want, _ := (&identity.Normalizer{}).JID(tt.jid)
		if claims, n := stripImpp(again); n != 1 || !slices.Equal(claims, []string{want}) {
			t.Errorf("stripImpp after stampImpp(%q) = %q, %d, want [%q], 1", tt.jid, claims, n, want)
		}
	}
}

func TestAddXMPPContact(t *testing.T) {
	req := mustRequest(t, "Contact: <sip:gw@192.0.2.1:5060>", "Subject: x")
	addXMPPContact(req, "Alice@example.com")
	var got []string
	for _, h := range req.GetHeaders("Contact") {
		got = append(got, h.Value())
	}
	if want := []string{"<sip:gw@192.0.2.1:5060>", "<xmpp:alice@example.com>"}; !slices.Equal(got, want) {
		t.Errorf("Contacts after addXMPPContact = %q, want %q", got, want)
	}
	if c := req.Contact(); c == nil || c.Address.Scheme != "sip" {
		t.Errorf("req.Contact() after addXMPPContact = %v, want the SIP one", c)
	}
	if c, ok := sipContact(req); !ok || c.Address.String() != "sip:gw@192.0.2.1:5060" {
		t.Errorf("sipContact after addXMPPContact = %v, %v, want sip:gw@192.0.2.1:5060", c, ok)
	}
	wire := req.String()
	if !strings.Contains(wire, "Contact: <sip:gw@192.0.2.1:5060>\r\nContact: <xmpp:alice@example.com>\r\n") {
		t.Errorf("serialised request lacks the two Contact lines in order:\n%s", wire)
	}
	// A phone that received this and sent it on would be stripped again.
	again := parseRequest(t, []byte(wire))
	if claims, n := stripImpp(again); n != 1 || !slices.Equal(claims, []string{"alice@example.com"}) {
		t.Errorf("stripImpp after addXMPPContact = %q, %d, want [alice@example.com], 1", claims, n)
	}

	// No SIP Contact yet, or an invalid JID: nothing added.
	for _, tc := range []struct {
		req *sip.Request
		jid string
	}{
		{mustRequest(t), "alice@example.com"},
		{mustRequest(t, "Contact: <tel:+15551230001>"), "alice@example.com"},
		{mustRequest(t, "Contact: <sip:gw@192.0.2.1>"), "not a jid"},
	} {
		before := tc.req.String()
		addXMPPContact(tc.req, tc.jid)
		if after := tc.req.String(); after != before {
			t.Errorf("addXMPPContact(%q) changed\n%s\ninto\n%s", tc.jid, before, after)
		}
	}
}

func TestSipContact(t *testing.T) {
	tests := []struct {
		lines []string
		want  string // "" for false
	}{
		{nil, ""},
		{[]string{"Contact: *"}, ""},
		{[]string{"Contact: <tel:+15551230001>"}, ""},
		{[]string{"Contact: <xmpp:a@example.com>, <sip:a@192.0.2.10>, <sips:a@192.0.2.11>"}, "sip:a@192.0.2.10"},
		{[]string{"Contact: <xmpp:a@example.com>", "m: <SIPS:a@192.0.2.11>"}, "sips:a@192.0.2.11"},
	}
	for _, tt := range tests {
		req := mustRequest(t, tt.lines...)
		c, ok := sipContact(req)
		got := ""
		if ok {
			got = c.Address.String()
		}
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("sipContact(%q) = %q, %v, want %q", tt.lines, got, ok, tt.want)
		}
	}
	// A Contact added as a generic header is parsed.
	req := mustRequest(t)
	req.AppendHeader(sip.NewHeader("Contact", "<xmpp:a@example.com>, <sip:a@192.0.2.10>"))
	if c, ok := sipContact(req); !ok || c.Address.String() != "sip:a@192.0.2.10" {
		t.Errorf("sipContact of a generic Contact = %v, %v, want sip:a@192.0.2.10", c, ok)
	}
}

func TestStripImppGenericContact(t *testing.T) {
	req := mustRequest(t, "Subject: x")
	req.AppendHeader(sip.NewHeader("Contact", `<sip:a@192.0.2.10>, <xmpp:mallory@example.com>;q=1, "B" <sip:b@192.0.2.11>`))
	req.AppendHeader(sip.NewHeader("Contact", `<xmpp:broken@example.com`))
	req.AppendHeader(sip.NewHeader("Contact", `<sip:c@192.0.2.12>`))
	claims, n := stripImpp(req)
	if n != 2 || !slices.Equal(claims, []string{"mallory@example.com"}) {
		t.Errorf("stripImpp = %q, %d, want [mallory@example.com], 2", claims, n)
	}
	var got []string
	for _, h := range req.GetHeaders("Contact") {
		got = append(got, h.Value())
	}
	if want := []string{"<sip:a@192.0.2.10>", `"B" <sip:b@192.0.2.11>`, "<sip:c@192.0.2.12>"}; !slices.Equal(got, want) {
		t.Errorf("Contacts after stripImpp = %q, want %q", got, want)
	}
	if c := req.Contact(); c == nil || c.Address.String() != "sip:a@192.0.2.10" {
		t.Errorf("req.Contact() = %v, want sip:a@192.0.2.10", c)
	}
	if strings.Contains(req.String(), placeholderName) {
		t.Errorf("placeholder left in\n%s", req.String())
	}
}

func TestStripImppOnlyXMPPContact(t *testing.T) {
	req := mustRequest(t, "Contact: <xmpp:a@example.com>")
	if _, n := stripImpp(req); n != 1 {
		t.Fatalf("stripImpp removed %d, want 1", n)
	}
	if c := req.Contact(); c != nil {
		t.Errorf("req.Contact() after removing the only Contact = %v, want nil", c)
	}
}

// BenchmarkStripImppFlood measures the worst shape: a 64 KiB request of
// xmpp Contacts behind a long list of other headers.
func BenchmarkStripImppFlood(b *testing.B) {
	var lines []string
	for range 1000 {
		lines = append(lines, "X: y")
	}
	for len(strings.Join(lines, "\r\n")) < 60000 {
		lines = append(lines, "Contact: <xmpp:m@example.com>")
	}
	lines = append(lines, "Contact: <sip:a@192.0.2.10>")
	raw := []byte(strings.Join(append([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bK-t",
		"Call-ID: flood",
		"CSeq: 1 INVITE",
	}, append(lines, "Content-Length: 0", "", "")...), "\r\n"))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		req := parseRequest(b, raw)
		b.StartTimer()
		stripImpp(req)
	}
}

// FuzzStripImpp: stripImpp never panics, leaves nothing to strip after a
// round trip through the wire format, and breaks no message that sipgo
// could serialise and parse again before.
func FuzzStripImpp(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "callinfo", "*.in.sip"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("OPTIONS sip:a@b SIP/2.0\r\nCall-Info: <xmpp:a@b>;purpose=impp,<x>\r\nm: <xmpp:c@d>,<sip:e@f>\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := sip.ParseMessage(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		if _, err := sip.ParseMessage([]byte(req.String())); err != nil {
			return // sipgo cannot round-trip this one by itself
		}
		claims, removed := stripImpp(req)
		if removed < len(claims) {
			t.Fatalf("stripImpp = %q, %d: more claims than removed values", claims, removed)
		}
		for _, c := range claims {
			if n, err := (&identity.Normalizer{}).JID(c); err != nil || n != c {
				t.Fatalf("claim %q is not a normalised bare JID (%q, %v)", c, n, err)
			}
		}
		out := req.String()
		msg2, err := sip.ParseMessage([]byte(out))
		if err != nil {
			t.Fatalf("stripped request does not parse: %v\n%q", err, out)
		}
		req2 := msg2.(*sip.Request)
		if c, n := stripImpp(req2); n != 0 {
			t.Fatalf("after a round trip stripImpp still removes %d (%q) from\n%q", n, c, out)
		}
		for _, h := range req2.Headers() {
			if c, ok := h.(*sip.ContactHeader); ok && c.Address.Scheme == "xmpp" {
				t.Fatalf("xmpp Contact left: %q", h.Value())
			}
			if strings.EqualFold(h.Name(), "Call-Info") {
				for _, v := range splitCallInfo(h.Value()) {
					if parseCallInfo(v).impp {
						t.Fatalf("impp Call-Info left: %q", v)
					}
				}
			}
		}
		if strings.Contains(out, placeholderName) {
			t.Fatalf("placeholder left in %q", out)
		}
	})
}

// FuzzCallInfoValues: splitting is stable (the values joined again split
// into the same values) and parsing a value never panics.
func FuzzCallInfoValues(f *testing.F) {
	for _, s := range []string{
		"<xmpp:a@b>;purpose=impp, <http://x/a,b>;purpose=icon",
		`<a>;p="x\", y", <b>`,
		`<a",b>, "c`,
		"xmpp:a@b;purpose=impp",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vals := splitCallInfo(s)
		for _, v := range vals {
			if v == "" || v != strings.TrimSpace(v) {
				t.Fatalf("splitCallInfo(%q) gave value %q: empty or untrimmed", s, v)
			}
			if got := splitCallInfo(v); len(got) != 1 || got[0] != v {
				t.Fatalf("value %q of %q splits again into %q", v, s, got)
			}
			ci := parseCallInfo(v)
			if ci.uri != "" {
				xmppClaim(ci.uri)
			}
		}
		if again := splitCallInfo(strings.Join(vals, ", ")); !slices.Equal(again, vals) {
			t.Fatalf("splitCallInfo(%q) = %q, but joined they split into %q", s, vals, again)
		}
	})
}
