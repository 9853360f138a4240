package b2bua

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Header look-ups on the call path. sipgo's GetHeaders and GetHeader
// lower-case the name of every header of the message on each call, one
// allocation per header whose name is not one of its few well-known ones
// (Subject, User-Agent, Allow, Supported...): copying a dozen whitelisted
// names cost ~70 allocations per call. These compare names with
// strings.EqualFold instead and allocate only the result.

// headerList is what the helpers read: *sip.Request and *sip.Response.
type headerList interface{ Headers() []sip.Header }

// headersNamed returns m's headers named name (case-insensitive), in order;
// nil when there is none.
func headersNamed(m headerList, name string) []sip.Header {
	var out []sip.Header
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
}

// headerNamed returns m's first header named name (case-insensitive), or nil.
func headerNamed(m headerList, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
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
			if strings.EqualFold(name, n) {
				dst.AppendHeader(sip.HeaderClone(h))
				break
			}
		}
	}
}
