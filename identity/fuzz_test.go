package identity_test

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/cusax-gw/cusax-gw/identity"
)

// The fuzz targets check that normalisation never panics, fails only with a
// *FieldError, and is idempotent: normalising an output again gives it
// back. Their seeds (f.Add and testdata/fuzz/<Target>) run with go test.

func wantFieldErr(t *testing.T, what, in string, err error) {
	t.Helper()
	var fe *identity.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, identity.ErrInvalid) {
		t.Fatalf("%s(%q) failed with %v (%T), want a *FieldError", what, in, err, err)
	}
}

func FuzzJID(f *testing.F) {
	for _, tt := range jidTests {
		f.Add(tt.in)
	}
	for _, tt := range jidBad {
		f.Add(tt.in)
	}
	n := norm(f, "")
	f.Fuzz(func(t *testing.T, in string) {
		out, err := n.JID(in)
		if err != nil {
			wantFieldErr(t, "JID", in, err)
			return
		}
		if !utf8.ValidString(out) || out == "" {
			t.Fatalf("JID(%q) = %q", in, out)
		}
		again, err := n.JID(out)
		if err != nil || again != out {
			t.Fatalf("JID(%q) = %q, but JID(%q) = %q, %v", in, out, out, again, err)
		}
		if k, err := n.Key(out); err != nil || k != (identity.Key{Kind: identity.KindJID, Value: out}) {
			t.Fatalf("Key(%q) = %v, %v, want the JID key", out, k, err)
		}
	})
}

func FuzzAOR(f *testing.F) {
	for _, tt := range aorTests {
		f.Add(tt.in)
	}
	for _, tt := range aorBad {
		f.Add(tt.in)
	}
	n := norm(f, "DE")
	f.Fuzz(func(t *testing.T, in string) {
		n.NumberKeyFromAOR(in) // must not panic
		out, err := n.AOR(in)
		if err != nil {
			wantFieldErr(t, "AOR", in, err)
			return
		}
		again, err := n.AOR(out)
		if err != nil || again != out {
			t.Fatalf("AOR(%q) = %q, but AOR(%q) = %q, %v", in, out, out, again, err)
		}
		if k, err := n.Key(out); err != nil || k != (identity.Key{Kind: identity.KindAOR, Value: out}) {
			t.Fatalf("Key(%q) = %v, %v, want the AOR key", out, k, err)
		}
		if k, ok := n.NumberKeyFromAOR(in); ok {
			if k.Kind != identity.KindTel {
				t.Fatalf("NumberKeyFromAOR(%q) = %v", in, k)
			}
			if again, err := n.Number(k.Value); err != nil || again != k.Value {
				t.Fatalf("NumberKeyFromAOR(%q) = %v, but Number(%q) = %q, %v", in, k, k.Value, again, err)
			}
		}
	})
}

func FuzzNumber(f *testing.F) {
	for _, tt := range numberTests {
		f.Add(tt.region, tt.in)
	}
	for _, tt := range numberBad {
		f.Add(tt.region, tt.in)
	}
	regions := map[string]*identity.Normalizer{}
	for _, r := range []string{"", "US", "DE", "GB", "FR", "IT", "JP", "BR", "IN", "RU"} {
		regions[r] = norm(f, r)
	}
	plain := regions[""]
	f.Fuzz(func(t *testing.T, region, in string) {
		n, ok := regions[region]
		if !ok {
			n = regions["US"]
		}
		out, err := n.Number(in)
		if err != nil {
			wantFieldErr(t, "Number", in, err)
			return
		}
		// E.164 needs no region to read back.
		again, err := plain.Number(out)
		if err != nil || again != out {
			t.Fatalf("Number(%q) [%s] = %q, but Number(%q) = %q, %v", in, region, out, out, again, err)
		}
		if len(out) > 16 || out[0] != '+' {
			t.Fatalf("Number(%q) = %q, not E.164", in, out)
		}
		if k, err := n.Key(out); err != nil || k != (identity.Key{Kind: identity.KindTel, Value: out}) {
			t.Fatalf("Key(%q) = %v, %v, want the tel key", out, k, err)
		}
	})
}

func FuzzKey(f *testing.F) {
	for _, s := range []string{
		"xmpp:alice@example.com", "alice@example.com", "sip:alice@example.com", "sips:a@b",
		"<sip:Alice@EXAMPLE.com:5060;transport=tcp>", `"A" <tel:+15551230001>`, "tel:+15551230001",
		"+15551230001", "030 1234567", "", "<", ">", "<>", "a@b/c", "xmpp:", "sip:", "tel:", "+",
	} {
		f.Add(s)
	}
	n := norm(f, "DE")
	f.Fuzz(func(t *testing.T, in string) {
		k, err := n.Key(in)
		if err != nil {
			wantFieldErr(t, "Key", in, err)
			return
		}
		var again string
		switch k.Kind {
		case identity.KindJID:
			again, err = n.JID(k.Value)
		case identity.KindAOR:
			again, err = n.AOR(k.Value)
		case identity.KindTel:
			again, err = n.Number(k.Value)
		default:
			t.Fatalf("Key(%q) = %v: unknown kind", in, k)
		}
		if err != nil || again != k.Value {
			t.Fatalf("Key(%q) = %v, but normalising %q again = %q, %v", in, k, k.Value, again, err)
		}
		if k2, err := n.Key(k.Value); err != nil || k2 != k {
			t.Fatalf("Key(%q) = %v, but Key(%q) = %v, %v", in, k, k.Value, k2, err)
		}
	})
}
