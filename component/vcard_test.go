package component

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
)

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s:\ngot  %s\nwant %s", name, got, want)
	}
}

func readTree(t *testing.T, name string) *node {
	t.Helper()
	if name == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join("testdata", "vcard", name))
	if err != nil {
		t.Fatal(err)
	}
	n, err := parseTreeString(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	aliceTels = []string{"+15551230001", "+15551230002"}
	aliceAORs = []string{"sip:alice@example.com"}
)

func TestMergeVCard4Golden(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         string // file in testdata/vcard, "" for no vCard
		tels, aors []string
		mode       VCardMode
	}{
		{"enforce", "vcard4-alice.xml", aliceTels, aliceAORs, VCardEnforce},
		{"fill", "vcard4-alice.xml", aliceTels, aliceAORs, VCardFill},
		{"off", "vcard4-alice.xml", aliceTels, aliceAORs, VCardOff},
		{"enforce-deleted", "vcard4-alice.xml", nil, nil, VCardEnforce},
		{"fill-deleted", "vcard4-alice.xml", nil, nil, VCardFill},
		{"enforce-new", "", aliceTels, aliceAORs, VCardEnforce},
		{"enforce-new-empty", "", nil, nil, VCardEnforce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := readTree(t, tc.in)
			m := mergeVCard4(old, tc.tels, tc.aors, "Alice", tc.mode)
			got := "unchanged\n"
			if m.changed {
				got = m.doc.String() + "\n"
				// Idempotence: merging the result again changes nothing.
				if again := mergeVCard4(m.doc, tc.tels, tc.aors, "Alice", tc.mode); again.changed {
					t.Errorf("second merge changed %s into %s", m.doc, again.doc)
				}
				if old != nil {
					keepsAll(t, old, m.doc, "photo", "fn", "n", "note", "x-custom")
				}
			}
			golden(t, "vcard/vcard4-"+tc.name+".golden", got)
		})
	}
}

func TestMergeVCardTempGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		tels []string
		mode VCardMode
	}{
		{"enforce", "vcard-temp-alice.xml", aliceTels, VCardEnforce},
		{"fill", "vcard-temp-alice.xml", aliceTels, VCardFill},
		{"off", "vcard-temp-alice.xml", aliceTels, VCardOff},
		{"enforce-deleted", "vcard-temp-alice.xml", nil, VCardEnforce},
		{"enforce-new", "", aliceTels, VCardEnforce},
		{"unchanged", "vcard-temp-alice.xml", []string{"+49301234567", "+15551230001"}, VCardEnforce},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := readTree(t, tc.in)
			m := mergeVCardTemp(old, tc.tels, tc.mode)
			got := "unchanged\n"
			if m.changed {
				got = m.doc.String() + "\n"
				if again := mergeVCardTemp(m.doc, tc.tels, tc.mode); again.changed {
					t.Errorf("second merge changed %s into %s", m.doc, again.doc)
				}
				if old != nil {
					keepsAll(t, old, m.doc, "FN", "N", "PHOTO", "DESC")
				}
			}
			golden(t, "vcard/vcard-temp-"+tc.name+".golden", got)
		})
	}
}

// keepsAll checks that every element of old named in locals is in doc,
// serialised identically.
func keepsAll(t *testing.T, old, doc *node, locals ...string) {
	t.Helper()
	for _, l := range locals {
		o := old.child("*", l)
		n := doc.child("*", l)
		if o == nil || n == nil || o.String() != n.String() {
			t.Errorf("<%s/> not preserved: old %v, new %v", l, o, n)
		}
	}
}

func TestTreeRoundTrip(t *testing.T) {
	for _, in := range []string{
		`<a xmlns='x'><b c='1' xml:lang='en'>t&amp;&lt;</b><d xmlns='y'><e/></d></a>`,
		`<a xmlns='x'>  <b/>  </a>`,
	} {
		n, err := parseTreeString(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.String(); got != in {
			t.Errorf("parse(%s).String() = %s", in, got)
		}
		again, err := parseTree(n.tokens())
		if err != nil || again.String() != in {
			t.Errorf("tokens round trip = %v, %v, want %s", again, err, in)
		}
	}
	for _, bad := range []string{"", "<a>", "<a></b>"} {
		if _, err := parseTreeString(bad); err == nil {
			t.Errorf("parseTreeString(%q) = nil error", bad)
		}
	}
}

func TestReachGolden(t *testing.T) {
	id := identity.Identity{JID: "alice@example.com", SIP: []string{"sip:alice@example.com", "sips:alice@pbx.example.com"}, Tel: []string{"+15551230001"}}
	uris := reachURIs(id)
	var b strings.Builder
	b.WriteString(reachElement(uris).String() + "\n")
	b.WriteString(reachElement(nil).String() + "\n")
	b.WriteString(publishPayload(NodeReach, reachElement(uris), "presence").String() + "\n")
	b.WriteString(itemsPayload(NodeReach).String() + "\n")
	golden(t, "stanza/reach.golden", b.String())

	if got := parseReach(reachElement(uris)); !reachEqual(got, uris) {
		t.Errorf("parseReach(reachElement(%v)) = %v", uris, got)
	}
	items, _ := parseTreeString(`<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:reach:0'><item id='current'><reach xmlns='urn:xmpp:reach:0'><addr uri='sip:a@b'><desc xml:lang='en'>SIP</desc></addr></reach></item></items></pubsub>`)
	if got := parseReach(parseItems(items)); !reachEqual(got, []string{"sip:a@b"}) {
		t.Errorf("parseReach(items) = %v", got)
	}
}

func TestNormNumber(t *testing.T) {
	for in, want := range map[string]string{
		"tel:+1-555-123-0001":    "+15551230001",
		"+1 (555) 123.0001":      "+15551230001",
		"tel:+15551230001;ext=2": "+15551230001",
		"030 1234567":            "0301234567",
		"":                       "",
	} {
		if got := normNumber(in); got != want {
			t.Errorf("normNumber(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseTree checks that parseTree never panics and that what it
// accepts serialises to text that parses back to the same tree.
func FuzzParseTree(f *testing.F) {
	for _, name := range []string{"vcard/vcard4-alice.xml", "vcard/vcard-temp-alice.xml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(`<a xmlns='x' xmlns:p='y'><p:b p:c='1'/>text&amp;</a>`)
	f.Add(`<iq><privilege xmlns='urn:xmpp:privilege:2'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns='jabber:client' type='error'/></forwarded></privilege></iq>`)
	f.Fuzz(func(t *testing.T, in string) {
		n, err := parseTreeString(in)
		if err != nil {
			return
		}
		s := n.String()
		again, err := parseTreeString(s)
		if err != nil {
			t.Fatalf("parse(%q).String() = %q does not parse: %v", in, s, err)
		}
		if again.String() != s {
			t.Fatalf("round trip changed %q into %q", s, again.String())
		}
		_ = parseReach(n)
		_ = vcardTempNumbers(n)
		_ = mergeVCard4(n, aliceTels, aliceAORs, "A", VCardEnforce)
		_ = mergeVCardTemp(n, aliceTels, VCardEnforce)
		_ = stanzaError(n)
	})
}
