package identity_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/identity"
)

func norm(t testing.TB, region string) *identity.Normalizer {
	t.Helper()
	n, err := identity.NewNormalizer(region)
	if err != nil {
		t.Fatalf("NewNormalizer(%q) = %v", region, err)
	}
	return n
}

func TestNewNormalizer(t *testing.T) {
	for _, r := range []string{"", "US", "de", " GB "} {
		if _, err := identity.NewNormalizer(r); err != nil {
			t.Errorf("NewNormalizer(%q) = %v", r, err)
		}
	}
	for _, r := range []string{"XX", "USA", "001", "EU"} {
		if _, err := identity.NewNormalizer(r); err == nil {
			t.Errorf("NewNormalizer(%q) succeeded, want an error", r)
		}
	}
	if got := norm(t, "de").DefaultRegion(); got != "DE" {
		t.Errorf("DefaultRegion = %q, want DE", got)
	}
}

// wantField checks that err is a *FieldError for field.
func wantField(t *testing.T, what string, err error, field string) {
	t.Helper()
	var fe *identity.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, identity.ErrInvalid) {
		t.Errorf("%s = %v, want a *FieldError for %q", what, err, field)
		return
	}
	if fe.Field != field {
		t.Errorf("%s: field %q, want %q (%v)", what, fe.Field, field, err)
	}
}

var jidTests = []struct{ in, want string }{
	{"alice@example.com", "alice@example.com"},
	{"Alice@EXAMPLE.com", "alice@example.com"},
	{"  alice@example.com\t", "alice@example.com"},
	{"xmpp:alice@example.com", "alice@example.com"},
	{"XMPP:Alice@Example.COM", "alice@example.com"},
	{"xmpp:alice@example.com?message;subject=hi", "alice@example.com"},
	{"xmpp:alice@example.com#frag", "alice@example.com"},
	{"xmpp://guest@example.com/alice@example.com", "alice@example.com"},
	{"xmpp:al%69ce@example.com", "alice@example.com"},
	{"xmpp:%C3%A5sa@example.com", "åsa@example.com"},
	{"ÅSA@Exämple.com", "åsa@exämple.com"},
	{"Σίσυφος@example.com", "σίσυφος@example.com"},
	{"juliet@example.com.", "juliet@example.com"},
	{"user.name+tag@sub.example.org", "user.name+tag@sub.example.org"},
	{"alice@[2001:db8::1]", "alice@[2001:db8::1]"},
	{"alice@192.0.2.1", "alice@192.0.2.1"},
	{"δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή"},
}

var jidBad = []struct{ in, why string }{
	{"", "empty"},
	{"   ", "blank"},
	{"example.com", "domain only"},
	{"xmpp:example.com", "domain only URI"},
	{"@example.com", "empty localpart"},
	{"alice@example.com/phone", "resource"},
	{"xmpp:alice@example.com/phone", "resource in URI"},
	{"alice@", "empty domain"},
	{"al ice@example.com", "space in localpart"},
	{"alice@exa mple.com", "space in domain"},
	{"a\"b@example.com", "quote in localpart"},
	{"a<b@example.com", "angle in localpart"},
	{"a:b@example.com", "colon in localpart"},
	{"alice@ex@ample.com", "two @"},
	{"xmpp:%zz@example.com", "bad percent"},
	{"xmpp://guest@example.com", "authority without JID"},
	{strings.Repeat("a", 1024) + "@example.com", "localpart too long"},
	{"a\x00b@example.com", "NUL"},
	{"\xff@example.com", "invalid UTF-8"},
}

func TestJID(t *testing.T) {
	n := norm(t, "")
	for _, tt := range jidTests {
		got, err := n.JID(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("JID(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			continue
		}
		if again, err := n.JID(got); err != nil || again != got {
			t.Errorf("JID(%q) = %q, %v, want itself (idempotent)", got, again, err)
		}
	}
	for _, tt := range jidBad {
		got, err := n.JID(tt.in)
		if err == nil {
			t.Errorf("JID(%q) = %q, want an error (%s)", tt.in, got, tt.why)
			continue
		}
		wantField(t, fmt.Sprintf("JID(%q)", tt.in), err, "jid")
	}
}

var aorTests = []struct{ in, want string }{
	{"sip:alice@example.com", "sip:alice@example.com"},
	{"sips:alice@example.com", "sips:alice@example.com"},
	{"SIP:alice@EXAMPLE.COM", "sip:alice@example.com"},
	{"<sip:Alice@EXAMPLE.com:5060;transport=tcp>", "sip:Alice@example.com"},
	{`"Alice Smith" <sip:alice@example.com>;tag=1928301774`, "sip:alice@example.com"},
	{"Alice <sips:alice@Example.com:5061>", "sips:alice@example.com"},
	{"sip:alice@example.com;transport=udp;lr", "sip:alice@example.com"},
	{"sip:alice@example.com?subject=project%20x&priority=urgent", "sip:alice@example.com"},
	{"sip:alice@example.com:5070", "sip:alice@example.com"},
	{"sip:alice:secret@example.com", "sip:alice@example.com"},
	{"sip:+15551230001@pbx.example.com;user=phone", "sip:+15551230001@pbx.example.com"},
	{"sip:+1-555-123-0001@pbx.example.com;user=phone", "sip:+1-555-123-0001@pbx.example.com"},
	{"sip:0301234567@pbx", "sip:0301234567@pbx"},
	{"sip:alice@[2001:DB8::1]:5060", "sip:alice@[2001:db8::1]"},
	{"sip:alice@192.0.2.10:5060", "sip:alice@192.0.2.10"},
	{"sip:alice@example.com.", "sip:alice@example.com"},
	{"sip:%61lice@example.com", "sip:alice@example.com"},
	{"sip:a%2fb@example.com", "sip:a/b@example.com"},
	{"sip:a%40b@example.com", "sip:a%40b@example.com"},
	{"sip:a%3cb@example.com", "sip:a%3Cb@example.com"},
	{"sip:user;isub=12@example.com", "sip:user;isub=12@example.com"},
	{"sip:j.doe-x_y!~*'()&=+$,?/@example.com", "sip:j.doe-x_y!~*'()&=+$,?/@example.com"},
	{"  sip:alice@example.com  ", "sip:alice@example.com"},
}

var aorBad = []struct{ in, why string }{
	{"", "empty"},
	{"alice@example.com", "no scheme"},
	{"tel:+15551230001", "tel URI"},
	{"xmpp:alice@example.com", "xmpp URI"},
	{"http://example.com", "http"},
	{"sip:example.com", "no user part"},
	{"sip:@example.com", "empty user part"},
	{"sip:alice@", "empty host"},
	{"sip:alice@exa mple.com", "space in host"},
	{"sip:al ice@example.com", "space in user"},
	{"sip:alice@example.com:99999", "port out of range"},
	{"sip:alice@example.com:50a", "bad port"},
	{"sip:alice@[2001:db8::1", "unbalanced ["},
	{"sip:alice@[example.com]", "not IPv6 in brackets"},
	{"<sip:alice@example.com", "unbalanced <"},
	{"sip:alice@example.com>", "unbalanced >"},
	{"sip:a%zzb@example.com", "bad percent"},
	{"sip:alice@exämple.com", "non-ASCII host"},
	{"sip:alice@-example.com", "label starts with -"},
	{"sip:alice@example..com", "empty label"},
	{"sip:alice@exam_ple.com", "underscore in host"},
	{"sip:al\"ice@example.com", "quote in user"},
}

func TestAOR(t *testing.T) {
	n := norm(t, "")
	for _, tt := range aorTests {
		got, err := n.AOR(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("AOR(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
			continue
		}
		if again, err := n.AOR(got); err != nil || again != got {
			t.Errorf("AOR(%q) = %q, %v, want itself (idempotent)", got, again, err)
		}
	}
	for _, tt := range aorBad {
		got, err := n.AOR(tt.in)
		if err == nil {
			t.Errorf("AOR(%q) = %q, want an error (%s)", tt.in, got, tt.why)
			continue
		}
		wantField(t, fmt.Sprintf("AOR(%q)", tt.in), err, "sip")
	}
}

var numberTests = []struct{ region, in, want string }{
	{"", "+15551230001", "+15551230001"},
	{"", "+1 555 123 0001", "+15551230001"},
	{"", "+1-555-123-0001", "+15551230001"},
	{"", "+1 (555) 123-0001", "+15551230001"},
	{"", "+1.555.123.0001", "+15551230001"},
	{"", "tel:+15551230001", "+15551230001"},
	{"", "TEL:+1-555-123-0001", "+15551230001"},
	{"", "tel:+1-555-123-0001;phone-context=+1", "+15551230001"},
	{"", "tel:555-123-0001;phone-context=+1", "+15551230001"},
	{"", "tel:030-1234567;phone-context=+49", "+49301234567"}, // national prefix dropped
	{"DE", "tel:030-1234567;phone-context=example.com", "+49301234567"},
	{"", "+49 30 1234567", "+49301234567"},
	{"", "+44 20 7946 0958", "+442079460958"},
	{"", "+33 1 23 45 67 89", "+33123456789"},
	{"", "+39 06 1234 5678", "+390612345678"}, // Italian leading zero kept
	{"", "+12025550123", "+12025550123"},      // a valid (non-555 exchange) US number
	{"US", "(555) 123-0001", "+15551230001"},
	{"US", "555-123-0001", "+15551230001"},
	{"US", "5551230001", "+15551230001"},
	{"US", "1-555-123-0001", "+15551230001"},
	{"US", "+49 30 1234567", "+49301234567"},
	{"US", "011 49 30 1234567", "+49301234567"}, // US international prefix
	{"DE", "0301234567", "+49301234567"},
	{"DE", "030 1234567", "+49301234567"},
	{"DE", "(030) 123 45 67", "+49301234567"},
	{"DE", "0049 30 1234567", "+49301234567"}, // DE international prefix
	{"DE", "+15551230001", "+15551230001"},
	{"GB", "020 7946 0958", "+442079460958"},
	{"FR", "01 23 45 67 89", "+33123456789"},
}

var numberBad = []struct{ region, in, why string }{
	{"", "", "empty"},
	{"", "+", "only a plus"},
	{"", "0301234567", "national without region"},
	{"", "(555) 123-0001", "national without region"},
	{"", "tel:555-123-0001;phone-context=example.com", "domain context without region"},
	{"", "+1 555 123", "too short"},
	{"", "+1555123000123456", "too long"},
	{"DE", "10000000000000", "16 digits with the country code (libphonenumber calls it possible)"},
	{"", "+49 10000000000000", "16 digits"},
	{"", "+999 123456", "unknown country code"},
	{"", "+12345", "too short"},
	{"", "1-800-FLOWERS", "letters"},
	{"US", "1-800-FLOWERS", "letters (vanity)"},
	{"", "alice", "not a number"},
	{"", "+1 555 123 0001 ext. 22", "extension"},
	{"", "tel:+15551230001;ext=22", "ext parameter"},
	{"", "tel:+15551230001;isub=1", "isub parameter"},
	{"", "+1+5551230001", "second plus"},
	{"", "tel:555;phone-context=+x", "bad phone-context"},
	{"US", "123-0001", "local only"},
	{"", "sip:+15551230001@pbx", "a SIP URI is not a number"},
}

func TestNumber(t *testing.T) {
	for _, tt := range numberTests {
		n := norm(t, tt.region)
		got, err := n.Number(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Number(%q) [region %q] = %q, %v, want %q", tt.in, tt.region, got, err, tt.want)
			continue
		}
		if again, err := norm(t, "").Number(got); err != nil || again != got {
			t.Errorf("Number(%q) = %q, %v, want itself (idempotent)", got, again, err)
		}
	}
	for _, tt := range numberBad {
		got, err := norm(t, tt.region).Number(tt.in)
		if err == nil {
			t.Errorf("Number(%q) [region %q] = %q, want an error (%s)", tt.in, tt.region, got, tt.why)
			continue
		}
		wantField(t, fmt.Sprintf("Number(%q)", tt.in), err, "tel")
	}
}

// The numbers all over CONTRACT.md are in the fictional 555 exchange, which
// libphonenumber does not call valid; they must still be accepted.
func TestNumber555(t *testing.T) {
	n := norm(t, "US")
	for i := range 10 {
		in := fmt.Sprintf("+1555123000%d", i)
		if got, err := n.Number(in); err != nil || got != in {
			t.Errorf("Number(%q) = %q, %v, want it unchanged", in, got, err)
		}
	}
}

func TestIdentity(t *testing.T) {
	n := norm(t, "US")
	in := identity.Identity{
		JID:     "Alice@Example.COM",
		SIP:     []string{"<sip:alice@EXAMPLE.com:5060>", "sip:alice@example.com", "sips:alice@pbx.example.com;transport=tls"},
		Tel:     []string{"tel:+1-555-123-0001", "(555) 123-0001", "+1 555 123 0002"},
		Name:    "  Alice Ådahl  ",
		Version: 7,
	}
	want := identity.Identity{
		JID:     "alice@example.com",
		SIP:     []string{"sip:alice@example.com", "sips:alice@pbx.example.com"},
		Tel:     []string{"+15551230001", "+15551230002"},
		Name:    "Alice Ådahl",
		Version: 7,
	}
	got, err := n.Identity(in)
	if err != nil || !got.Equal(want) || got.Version != want.Version {
		t.Fatalf("Identity(%+v) =\n%+v, %v, want\n%+v", in, got, err, want)
	}
	again, err := n.Identity(got)
	if err != nil || !again.Equal(got) {
		t.Errorf("Identity(%+v) = %+v, %v, want itself", got, again, err)
	}
	if got, err := n.Identity(identity.Identity{JID: "bob@example.com"}); err != nil || got.SIP != nil || got.Tel != nil {
		t.Errorf("Identity(JID only) = %+v, %v", got, err)
	}
	if got, err := n.Identity(identity.Identity{JID: "bob@example.com", Name: "👩‍💻 Bob"}); err != nil || got.Name != "👩‍💻 Bob" {
		t.Errorf("Identity(emoji name with ZWJ) = %+v, %v", got, err)
	}

	many := func(f func(i int) string, k int) []string {
		var s []string
		for i := range k {
			s = append(s, f(i))
		}
		return s
	}
	aor := func(i int) string { return fmt.Sprintf("sip:a%d@example.com", i) }
	num := func(i int) string { return fmt.Sprintf("+1555200%04d", i) }
	// Exactly the limits.
	if _, err := n.Identity(identity.Identity{JID: "a@example.com", SIP: many(aor, 32), Tel: many(num, 32), Name: strings.Repeat("ä", 256)}); err != nil {
		t.Errorf("Identity at the limits = %v", err)
	}
	// Repeats count once.
	if got, err := n.Identity(identity.Identity{JID: "a@example.com", SIP: append(many(aor, 32), many(aor, 32)...)}); err != nil || len(got.SIP) != 32 {
		t.Errorf("Identity(32 AORs twice) = %d AORs, %v", len(got.SIP), err)
	}

	bad := []struct {
		id    identity.Identity
		field string
	}{
		{identity.Identity{}, "jid"},
		{identity.Identity{JID: "example.com"}, "jid"},
		{identity.Identity{JID: "a@example.com/res"}, "jid"},
		{identity.Identity{JID: "a@example.com", SIP: []string{"sip:a@example.com", "tel:+15551230001"}}, "sip[1]"},
		{identity.Identity{JID: "a@example.com", SIP: []string{""}}, "sip[0]"},
		{identity.Identity{JID: "a@example.com", Tel: []string{"+15551230001", "+15551230002", "nope"}}, "tel[2]"},
		{identity.Identity{JID: "a@example.com", Tel: []string{"+1 555"}}, "tel[0]"},
		{identity.Identity{JID: "a@example.com", SIP: many(aor, 33)}, "sip"},
		{identity.Identity{JID: "a@example.com", Tel: many(num, 33)}, "tel"},
		{identity.Identity{JID: "a@example.com", SIP: many(aor, 1000)}, "sip"},
		{identity.Identity{JID: "a@example.com", Name: strings.Repeat("x", 257)}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "line\nbreak"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "tab\there"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "nul\x00"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "c1\u0085control"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "evil\u202egnp.exe"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "line\u2028separator"}, "name"},
		{identity.Identity{JID: "a@example.com", Name: "\xff"}, "name"},
	}
	for _, tt := range bad {
		_, err := n.Identity(tt.id)
		wantField(t, fmt.Sprintf("Identity(jid %q, %d sip, %d tel, name %.40q)", tt.id.JID, len(tt.id.SIP), len(tt.id.Tel), tt.id.Name), err, tt.field)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	_, err := norm(t, "").Identity(identity.Identity{JID: "a@example.com", Tel: []string{"+15551230001", "0301234567"}})
	const want = `identity: tel[1]: national number needs identity.default_region, or write it as +<country code>…, got "0301234567"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		region, in string
		want       identity.Key
	}{
		{"", "xmpp:alice@example.com", identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}},
		{"", "xmpp:Alice@Example.com/phone", identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}},
		{"", "alice@example.com", identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}},
		{"", "ALICE@EXAMPLE.COM", identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}},
		{"", "alice@example.com/laptop", identity.Key{Kind: identity.KindJID, Value: "alice@example.com"}},
		{"", "sip:alice@example.com", identity.Key{Kind: identity.KindAOR, Value: "sip:alice@example.com"}},
		{"", "sips:alice@example.com", identity.Key{Kind: identity.KindAOR, Value: "sips:alice@example.com"}},
		{"", "SIP:Alice@EXAMPLE.com:5060;transport=tcp", identity.Key{Kind: identity.KindAOR, Value: "sip:Alice@example.com"}},
		{"", "<sip:Alice@EXAMPLE.com:5060;transport=tcp>", identity.Key{Kind: identity.KindAOR, Value: "sip:Alice@example.com"}},
		{"", `"Alice" <sip:alice@example.com>;tag=abc`, identity.Key{Kind: identity.KindAOR, Value: "sip:alice@example.com"}},
		{"", "sip:+15551230001@pbx.example.com;user=phone", identity.Key{Kind: identity.KindAOR, Value: "sip:+15551230001@pbx.example.com"}},
		{"", "tel:+15551230001", identity.Key{Kind: identity.KindTel, Value: "+15551230001"}},
		{"", "<tel:+1-555-123-0001>", identity.Key{Kind: identity.KindTel, Value: "+15551230001"}},
		{"", "+15551230001", identity.Key{Kind: identity.KindTel, Value: "+15551230001"}},
		{"", " +1 (555) 123-0001 ", identity.Key{Kind: identity.KindTel, Value: "+15551230001"}},
		{"US", "5551230001", identity.Key{Kind: identity.KindTel, Value: "+15551230001"}},
		{"DE", "030 1234567", identity.Key{Kind: identity.KindTel, Value: "+49301234567"}},
	}
	for _, tt := range tests {
		got, err := norm(t, tt.region).Key(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Key(%q) [region %q] = %v, %v, want %v", tt.in, tt.region, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "alice", "example.com", "http://example.com/", "sip:example.com", "tel:alice", "5551230001", "xmpp:example.com", "<sip:a@b", "<<sip:a@b>>"} {
		got, err := norm(t, "").Key(in)
		if err == nil {
			t.Errorf("Key(%q) = %v, want an error", in, got)
			continue
		}
		wantField(t, fmt.Sprintf("Key(%q)", in), err, "uri")
	}
}

func TestNumberKeyFromAOR(t *testing.T) {
	tel := func(v string) identity.Key { return identity.Key{Kind: identity.KindTel, Value: v} }
	tests := []struct {
		region, in string
		want       identity.Key
		ok         bool
	}{
		{"", "sip:+15551230001@pbx;user=phone", tel("+15551230001"), true},
		{"", "sip:+1-555-123-0001@pbx.example.com;user=phone", tel("+15551230001"), true},
		{"", "<sip:+15551230001@pbx:5060;user=phone>;tag=x", tel("+15551230001"), true},
		{"", "sip:+15551230001@pbx", tel("+15551230001"), true},
		{"", "sip:5551230001;phone-context=+1@pbx;user=phone", tel("+15551230001"), true},
		{"DE", "sip:0301234567@pbx", tel("+49301234567"), true},
		{"DE", "sip:030-1234567@pbx;user=phone", tel("+49301234567"), true},
		{"US", "sip:5551230001@pbx", tel("+15551230001"), true},
		{"US", "sips:1-555-123-0001@pbx", tel("+15551230001"), true},
		{"", "sip:0301234567@pbx", identity.Key{}, false}, // national, no region
		{"DE", "sip:100@pbx", identity.Key{}, false},      // an extension
		{"US", "sip:alice@example.com", identity.Key{}, false},
		{"US", "sip:alice@example.com;user=phone", identity.Key{}, false},
		{"US", "tel:+15551230001", identity.Key{}, false},
		{"US", "not a uri", identity.Key{}, false},
		{"US", "sip:+15551230001;ext=12@pbx;user=phone", identity.Key{}, false},
	}
	for _, tt := range tests {
		got, ok := norm(t, tt.region).NumberKeyFromAOR(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("NumberKeyFromAOR(%q) [region %q] = %v, %v, want %v, %v", tt.in, tt.region, got, ok, tt.want, tt.ok)
		}
	}
}

func ExampleNormalizer_Key() {
	n, _ := identity.NewNormalizer("DE")
	for _, in := range []string{
		"xmpp:Alice@Example.com",
		`"Alice" <sip:alice@EXAMPLE.com:5060;transport=tcp>`,
		"tel:+1-555-123-0001",
		"030 1234567",
	} {
		k, _ := n.Key(in)
		fmt.Println(k)
	}
	k, _ := n.NumberKeyFromAOR("sip:0301234567@pbx.example.com")
	fmt.Println(k)
	// Output:
	// jid:alice@example.com
	// sip:sip:alice@example.com
	// tel:+15551230001
	// tel:+49301234567
	// tel:+49301234567
}
