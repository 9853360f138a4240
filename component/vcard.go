package component

import (
	"fmt"
	"slices"
	"strings"
)

// VCardMode says how the sync engine treats the tel fields of vCards
// (xmpp.sync.vcard).
type VCardMode string

// The vCard modes.
const (
	// VCardEnforce makes the numbers (and, in vCard4, the SIP impp
	// addresses) of every vCard equal the identity map: missing ones are
	// added and every other TEL is removed, whoever wrote it (the draft's
	// "prevent users from modifying"). A user without an identity keeps no
	// numbers.
	VCardEnforce VCardMode = "enforce"
	// VCardFill only adds the map's numbers and AORs that are missing;
	// nothing is ever removed.
	VCardFill VCardMode = "fill"
	// VCardOff leaves vCards alone.
	VCardOff VCardMode = "off"
)

// vcardMerge is the outcome of a read-modify-write merge.
type vcardMerge struct {
	doc     *node // the document to write (nil if unchanged)
	changed bool
}

// normNumber reduces a phone number or tel: URI to '+' and digits so that
// "tel:+1-555-123-0001" and "+1 555 1230001" compare equal. Parameters
// (";ext=…") are dropped.
func normNumber(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "tel:"), "TEL:")
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '+' && i == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isSIP reports whether uri is a sip: or sips: URI.
func isSIP(uri string) bool {
	u := strings.ToLower(strings.TrimSpace(uri))
	return strings.HasPrefix(u, "sip:") || strings.HasPrefix(u, "sips:")
}

// mergeVCard4 merges the map's numbers and AORs into the XEP-0292 vCard4
// element old (nil when the user has none) according to mode and returns
// the new document. Every element the component does not manage is kept in
// place; managed elements are <tel/> (all of them, compared by number) and
// <impp/> whose URI is sip:/sips:. New ones are appended at the end:
//
//	<tel><parameters><type><text>voice</text></type></parameters><uri>tel:+15551230001</uri></tel>
//	<impp><uri>sip:alice@example.com</uri></impp>
//
// name is written as <fn/> only when a new vCard is created.
func mergeVCard4(old *node, tels, aors []string, name string, mode VCardMode) vcardMerge {
	if mode != VCardEnforce && mode != VCardFill {
		return vcardMerge{}
	}
	doc := old.clone()
	if doc == nil {
		if len(tels) == 0 && len(aors) == 0 {
			return vcardMerge{}
		}
		doc = elem(NSVCard4, "vcard")
		if name != "" {
			doc.Kids = append(doc.Kids, elem(NSVCard4, "fn", elem(NSVCard4, "text", name)))
		}
	}
	wantTel := map[string]bool{}
	for _, t := range tels {
		wantTel[normNumber(t)] = true
	}
	wantAOR := map[string]bool{}
	for _, a := range aors {
		wantAOR[strings.ToLower(a)] = true
	}
	haveTel := map[string]bool{}
	haveAOR := map[string]bool{}
	kids := doc.Kids[:0:0]
	for _, k := range doc.Kids {
		e, ok := k.(*node)
		if !ok || e.Name.Space != NSVCard4 {
			kids = append(kids, k)
			continue
		}
		switch e.Name.Local {
		case "tel":
			num := normNumber(e.child(NSVCard4, "uri").text())
			if num == "" {
				num = normNumber(e.child(NSVCard4, "text").text())
			}
			if mode == VCardEnforce && (!wantTel[num] || haveTel[num]) {
				kids = dropIndent(kids) // not ours to keep, or a duplicate
				continue
			}
			haveTel[num] = true
		case "impp":
			uri := strings.TrimSpace(e.child(NSVCard4, "uri").text())
			if isSIP(uri) {
				u := strings.ToLower(uri)
				if mode == VCardEnforce && (!wantAOR[u] || haveAOR[u]) {
					kids = dropIndent(kids)
					continue
				}
				haveAOR[u] = true
			}
		}
		kids = append(kids, k)
	}
	for _, t := range tels {
		if !haveTel[normNumber(t)] {
			haveTel[normNumber(t)] = true
			kids = append(kids, elem(NSVCard4, "tel",
				elem(NSVCard4, "parameters", elem(NSVCard4, "type", elem(NSVCard4, "text", "voice"))),
				elem(NSVCard4, "uri", "tel:"+t)))
		}
	}
	for _, a := range aors {
		if !haveAOR[strings.ToLower(a)] {
			haveAOR[strings.ToLower(a)] = true
			kids = append(kids, elem(NSVCard4, "impp", elem(NSVCard4, "uri", a)))
		}
	}
	doc.Kids = kids
	if old != nil && doc.String() == old.String() {
		return vcardMerge{}
	}
	return vcardMerge{doc: doc, changed: true}
}

// mergeVCardTemp merges the map's numbers into the XEP-0054 vCard old (nil
// or an empty <vCard/> when the user has none) according to mode. Managed
// elements are <TEL/> (all of them, compared by NUMBER); new ones are
// appended as <TEL><WORK/><VOICE/><NUMBER>+15551230001</NUMBER></TEL>.
// vcard-temp has no field for SIP addresses; they are published in
// XEP-0152 reachability only. Everything else, PHOTO included, is kept.
func mergeVCardTemp(old *node, tels []string, mode VCardMode) vcardMerge {
	if mode != VCardEnforce && mode != VCardFill {
		return vcardMerge{}
	}
	doc := old.clone()
	if doc == nil {
		if len(tels) == 0 {
			return vcardMerge{}
		}
		doc = elem(NSVCard, "vCard")
	}
	want := map[string]bool{}
	for _, t := range tels {
		want[normNumber(t)] = true
	}
	have := map[string]bool{}
	kids := doc.Kids[:0:0]
	for _, k := range doc.Kids {
		if e, ok := k.(*node); ok && e.Name.Space == NSVCard && e.Name.Local == "TEL" {
			num := normNumber(e.child(NSVCard, "NUMBER").text())
			if mode == VCardEnforce && (!want[num] || have[num]) {
				kids = dropIndent(kids)
				continue
			}
			have[num] = true
		}
		kids = append(kids, k)
	}
	for _, t := range tels {
		if n := normNumber(t); !have[n] {
			have[n] = true
			kids = append(kids, elem(NSVCard, "TEL", elem(NSVCard, "WORK"), elem(NSVCard, "VOICE"), elem(NSVCard, "NUMBER", t)))
		}
	}
	doc.Kids = kids
	if old != nil && doc.String() == old.String() {
		return vcardMerge{}
	}
	return vcardMerge{doc: doc, changed: true}
}

// dropIndent removes a trailing whitespace-only text from kids: the
// indentation in front of an element that is being removed.
func dropIndent(kids []any) []any {
	if k := len(kids); k > 0 {
		if s, ok := kids[k-1].(string); ok && strings.TrimSpace(s) == "" {
			return kids[:k-1]
		}
	}
	return kids
}

// vcardTempNumbers returns the normalised numbers of a vcard-temp document,
// sorted, for confirming a write by reading back.
func vcardTempNumbers(doc *node) []string {
	var out []string
	for _, e := range doc.elements() {
		if e.Name.Local == "TEL" {
			out = append(out, normNumber(e.child("*", "NUMBER").text()))
		}
	}
	slices.Sort(out)
	return out
}

// parseVCardMode parses xmpp.sync.vcard; "" is VCardEnforce.
func parseVCardMode(s string) (VCardMode, error) {
	switch m := VCardMode(s); m {
	case "":
		return VCardEnforce, nil
	case VCardEnforce, VCardFill, VCardOff:
		return m, nil
	}
	return "", fmt.Errorf("want enforce, fill or off, got %q", s)
}
