package b2bua

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Request checks every request gets before its handler (RFC 3261 sections
// 8.2.1 to 8.2.3, and RFC 4475's torture cases): what sipgo's parser lets
// through but a UAS must refuse.

// singleHeaders may appear once only.
var singleHeaders = [...]string{"From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type"}

// repeatedSingleHeader returns the first of singleHeaders that req carries
// more than once, or "": one pass over the headers (this runs on every
// request).
func repeatedSingleHeader(req *sip.Request) string {
	var seen [len(singleHeaders)]bool
	for _, h := range req.Headers() {
		name := h.Name()
		for i, s := range singleHeaders {
			if nameIs(name, s) {
				if seen[i] {
					return s
				}
				seen[i] = true
				break
			}
		}
	}
	return ""
}

// rejection is a response refusing a request.
type rejection struct {
	code   int
	reason string
	hdrs   []sip.Header
}

// checkRequest returns why req must be refused, or nil.
func checkRequest(req *sip.Request) *rejection {
	if req.SipVersion != "SIP/2.0" {
		return &rejection{code: 505, reason: "Version Not Supported"}
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil || req.Via() == nil {
		return &rejection{code: 400, reason: "Bad Request", hdrs: warning("missing To, From, Call-ID, CSeq or Via")}
	}
	if req.CSeq().MethodName != req.Method {
		return &rejection{code: 400, reason: "Bad Request", hdrs: warning("CSeq method differs from the request's")}
	}
	if name := repeatedSingleHeader(req); name != "" {
		return &rejection{code: 400, reason: "Bad Request", hdrs: warning("more than one " + name)}
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel":
	default:
		return &rejection{code: 416, reason: "Unsupported URI Scheme"}
	}
	if req.Method != sip.CANCEL {
		var bad []string
		for _, h := range headersNamed(req, "Require") {
			for _, tag := range strings.Split(h.Value(), ",") {
				if unsupportedExtension(tag) {
					bad = append(bad, strings.TrimSpace(tag))
				}
			}
		}
		if len(bad) > 0 {
			return &rejection{code: 420, reason: "Bad Extension", hdrs: []sip.Header{sip.NewHeader("Unsupported", strings.Join(bad, ", "))}}
		}
	}
	if req.Method == sip.INVITE {
		if len(req.Body()) > 0 && sdpBody(req) == nil {
			return &rejection{code: 415, reason: "Unsupported Media Type",
				hdrs: []sip.Header{sip.NewHeader("Accept", "application/sdp")}}
		}
		if !acceptsSDP(headersNamed(req, "Accept")) {
			return &rejection{code: 406, reason: "Not Acceptable",
				hdrs: []sip.Header{sip.NewHeader("Accept", "application/sdp")}}
		}
	}
	return nil
}

// acceptsSDP reports whether Accept headers allow an SDP answer (no
// Accept header allows it; RFC 3261 section 20.1).
func acceptsSDP(hs []sip.Header) bool {
	if len(hs) == 0 {
		return true
	}
	for _, h := range hs {
		for _, v := range strings.Split(h.Value(), ",") {
			t := strings.ToLower(strings.TrimSpace(v))
			if i := strings.IndexByte(t, ';'); i >= 0 {
				t = strings.TrimSpace(t[:i])
			}
			switch t {
			case "", "application/sdp", "application/*", "*/*":
				return true
			}
		}
	}
	return false
}

func warning(text string) []sip.Header {
	return []sip.Header{sip.NewHeader("Warning", `399 cusax-gw "`+text+`"`)}
}
