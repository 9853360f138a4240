package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// parsePrivilegeBytes parses a standalone advert, as the fuzz target does.
func parsePrivilegeBytes(b []byte) (Privileges, error) {
	return parsePrivilege(xml.NewDecoder(bytes.NewReader(b)))
}

// TestParsePrivilegeGolden parses every testdata/privilege/*.xml and compares
// Privileges.String (or the error) with the .golden file beside it.
func TestParsePrivilegeGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/privilege/*.xml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := parsePrivilegeBytes(in)
			got := p.String() + "\n"
			if err != nil {
				got = "error: " + err.Error() + "\n"
			}
			golden := strings.TrimSuffix(file, ".xml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestParsePrivilegeGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("parsePrivilege(%s) = %q, want %q", file, got, want)
			}
		})
	}
}

func TestParsePrivilege(t *testing.T) {
	read := func(t *testing.T, name string) Privileges {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("testdata/privilege", name))
		if err != nil {
			t.Fatal(err)
		}
		p, err := parsePrivilegeBytes(b)
		if err != nil {
			t.Fatalf("parsePrivilege(%s): %v", name, err)
		}
		return p
	}

	t.Run("prosody nested namespaces", func(t *testing.T) {
		p := read(t, "prosody-0.12-v2-nested.xml")
		want := map[string]bool{AccessRoster: true, AccessPresence: true, AccessMessage: true, AccessPubSub: true, AccessVCard: true}
		if g := p.Granted(); !equalMaps(g, want) {
			t.Errorf("Granted() = %v, want %v", g, want)
		}
		for _, ns := range []string{NSVCard, NSVCard4, NSPubSub} {
			if !p.CanIQ(ns, "get") || !p.CanIQ(ns, "set") {
				t.Errorf("CanIQ(%q, get/set) = false, want true (IQ = %v)", ns, p.IQ)
			}
		}
		if p.CanRoster("set") || !p.CanRoster("get") {
			t.Errorf("CanRoster get/set = %v/%v, want true/false", p.CanRoster("get"), p.CanRoster("set"))
		}
	})
	t.Run("ejabberd v1", func(t *testing.T) {
		p := read(t, "ejabberd-23.01-v1.xml")
		want := map[string]bool{AccessRoster: true, AccessPresence: true, AccessMessage: true}
		if g := p.Granted(); !equalMaps(g, want) {
			t.Errorf("Granted() = %v, want %v", g, want)
		}
		if p.Version != 1 || p.IQ != nil {
			t.Errorf("Version, IQ = %d, %v, want 1, nil", p.Version, p.IQ)
		}
	})
	t.Run("spec v2 flat", func(t *testing.T) {
		p := read(t, "xep0356-v2-flat.xml")
		if !p.CanIQ(NSPubSub, "set") || p.CanIQ(NSPubSub, "get") || p.CanIQ(NSVCard, "set") || !p.CanIQ(NSVCard, "get") {
			t.Errorf("IQ = %v, want pubsub set only and vcard-temp get only", p.IQ)
		}
		want := map[string]bool{AccessRoster: true, AccessPresence: true, AccessMessage: true, AccessPubSub: true}
		if g := p.Granted(); !equalMaps(g, want) {
			t.Errorf("Granted() = %v, want %v", g, want)
		}
	})
	t.Run("odd values grant nothing undefined", func(t *testing.T) {
		p := read(t, "odd-values.xml")
		want := map[string]bool{AccessPresence: true}
		if g := p.Granted(); !equalMaps(g, want) {
			t.Errorf("Granted() = %v, want %v", g, want)
		}
		if p.CanIQ("urn:xmpp:vcard4", "get") || p.CanIQ("", "set") || p.CanIQ(NSVCard, "get") {
			t.Errorf("IQ = %v grants something it must not", p.IQ)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, name := range []string{"garbage.xml", "truncated.xml", "mismatched-tags.xml"} {
			b, _ := os.ReadFile(filepath.Join("testdata/privilege", name))
			if _, err := parsePrivilegeBytes(b); err == nil || !strings.HasPrefix(err.Error(), "component: ") {
				t.Errorf("parsePrivilege(%s) error = %v, want a component: error", name, err)
			}
		}
		b, _ := os.ReadFile("testdata/privilege/no-privilege.xml")
		if _, err := parsePrivilegeBytes(b); !errors.Is(err, ErrNoPrivilege) {
			t.Errorf("parsePrivilege(no-privilege.xml) error = %v, want ErrNoPrivilege", err)
		}
	})
}

func TestPrivilegesHelpers(t *testing.T) {
	p := Privileges{Version: 2, Roster: "both", Presence: "roster", Message: "none",
		IQ: map[string]string{NSPubSub: "get", NSVCard4: "set"}}
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"CanRoster(get)", p.CanRoster("get"), true},
		{"CanRoster(set)", p.CanRoster("set"), true},
		{"CanRoster(both)", p.CanRoster("both"), false},
		{"CanPresence()", p.CanPresence(), true},
		{"CanMessage()", p.CanMessage(), false},
		{"CanIQ(pubsub, get)", p.CanIQ(NSPubSub, "get"), true},
		{"CanIQ(pubsub, set)", p.CanIQ(NSPubSub, "set"), false},
		{"CanIQ(vcard4, set)", p.CanIQ(NSVCard4, "set"), true},
		{"CanIQ(unknown, get)", p.CanIQ("urn:example", "get"), false},
		{"Granted()[iq_vcard]", p.Granted()[AccessVCard], true},
		{"Granted()[iq_pubsub]", p.Granted()[AccessPubSub], false},
		{"zero CanIQ", Privileges{}.CanIQ(NSPubSub, "get"), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	c := p.Clone()
	c.IQ[NSPubSub] = "both"
	if p.IQ[NSPubSub] != "get" {
		t.Errorf("Clone shares its IQ map with the original")
	}
	if got, want := p.String(), "v2 roster=both presence=roster message=none iq=[http://jabber.org/protocol/pubsub=get urn:ietf:params:xml:ns:vcard-4.0=set]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Privileges{}).String(); got != "none" {
		t.Errorf("zero String() = %q, want none", got)
	}
}

// FuzzParsePrivilege feeds arbitrary bytes to the advert parser: it must
// never panic, and whatever it accepts must be self-consistent. The seed
// corpus (testdata/privilege/*.xml and testdata/fuzz/FuzzParsePrivilege)
// runs with every go test.
func FuzzParsePrivilege(f *testing.F) {
	files, _ := filepath.Glob("testdata/privilege/*.xml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePrivilegeBytes(b)
		if err != nil {
			if p.Version != 0 || p.IQ != nil {
				t.Errorf("parsePrivilege returned %v with error %v, want the zero value", p, err)
			}
			return
		}
		if p.Version != 1 && p.Version != 2 {
			t.Errorf("Version = %d, want 1 or 2", p.Version)
		}
		for ns := range p.IQ {
			if ns == "" {
				t.Errorf("IQ has an empty namespace key")
			}
		}
		_ = p.String()
		_ = p.Granted()
		_ = p.LogValue().Resolve()
	})
}

func equalMaps(got map[string]bool, want map[string]bool) bool {
	for _, a := range accessLabels {
		if got[a] != want[a] {
			return false
		}
	}
	return len(got) == len(accessLabels)
}
