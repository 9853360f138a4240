package b2bua

import (
	"strings"
	"testing"
)

// nameIs is strings.EqualFold, on ASCII and non-ASCII names alike.
func TestNameIs(t *testing.T) {
	names := []string{"", "m", "M", "Contact", "contact", "CONTACT", "Contacts", "Contac", "Call-Info", "call-info",
		"Call_Info", "CSeq", "cseq", "Via", "via", "vIa", "Allow", "allow", "@llow", "`llow", "[", "{",
		"\u212a", "k", "K", "ſ", "s", "S", "Acce\u017ft", "Accept", "Kontakt", "\u212aontakt", "kontakt", "é", "É"}
	for _, a := range names {
		for _, b := range names {
			if got, want := nameIs(a, b), strings.EqualFold(a, b); got != want {
				t.Errorf("nameIs(%q, %q) = %v, want %v", a, b, got, want)
			}
		}
	}
}

func FuzzNameIs(f *testing.F) {
	f.Add("Contact", "contact")
	f.Add("\u212a", "k")
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := nameIs(a, b), strings.EqualFold(a, b); got != want {
			t.Errorf("nameIs(%q, %q) = %v, want %v", a, b, got, want)
		}
	})
}
