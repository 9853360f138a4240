package b2bua

import (
	"strings"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
)

// Header look-ups on the call path. sipgo's GetHeaders and GetHeader
// lower-case the name of every header of the message on each call, one
// allocation per header whose name is not one of its few well-known ones
// (Subject, User-Agent, Allow, Supported...): copying a dozen whitelisted
// names cost ~70 allocations per call. These compare names with
// nameIs (strings.EqualFold) instead and allocate only the result.

// nameIs reports whether the header names a and b are equal under
// Unicode case folding (strings.EqualFold), quickly for ASCII names: it
// walks both while their bytes are ASCII (each a whole rune, equal under
// folding only to its other ASCII case) and stops at the first difference;
// from a non-ASCII byte on, EqualFold decides.
func nameIs(a, b string) bool {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		x, y := a[i], b[i]
		if x >= utf8.RuneSelf || y >= utf8.RuneSelf {
			return strings.EqualFold(a[i:], b[i:])
		}
		if x == y {
			continue
		}
		if lx := x | 0x20; lx == y|0x20 && 'a' <= lx && lx <= 'z' {
			continue
		}
		return false
	}
	// Equal, or one a prefix of the other: no rune folds to nothing.
	return len(a) == len(b)
}

// headerList is what the helpers read: *sip.Request and *sip.Response.
type headerList interface{ Headers() []sip.Header }

// headersNamed returns m's headers named name (case-insensitive), in order;
// nil when there is none.
func headersNamed(m headerList, name string) []sip.Header {
	var out []sip.Header
	for _, h := range m.Headers() {
		if nameIs(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
}

// headerNamed returns m's first header named name (case-insensitive), or nil.
func headerNamed(m headerList, name string) sip.Header {
	for _, h := range m.Headers() {
		if nameIs(h.Name(), name) {
			return h
		}
	}
	return nil
}

// copyHeaders appends to dst clones of src's headers named one of names
// (case-insensitive), in src's order, in one pass over src.
func copyHeaders(src headerList, dst sip.Message, names ...string) {
	for _, h := range src.Headers() {
		name := h.Name()
		for _, n := range names {
			if nameIs(name, n) {
				dst.AppendHeader(sip.HeaderClone(h))
				break
			}
		}
	}
}
