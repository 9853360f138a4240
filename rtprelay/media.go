package rtprelay

import "context"

// Media is the call-level media API the b2bua drives, implemented by the
// in-process relay (*Relay) and by rtpengine over the ng protocol
// (*Rtpengine). Implementations are safe for concurrent use. Errors wrap
// ErrBadSDP (answer 488), ErrNoPorts (503 with Retry-After), ErrNotFound
// (unknown Call-ID) or ErrClosed; anything else is a backend failure
// (500/503).
type Media interface {
	// Offer anchors the SDP offer of the leg with fromTag (also a re-offer
	// from either leg) and returns the SDP for the other leg.
	Offer(ctx context.Context, callID, fromTag string, sdp []byte) ([]byte, error)
	// Answer anchors the answer of the leg with toTag to the latest offer
	// and returns the SDP for the offerer.
	Answer(ctx context.Context, callID, toTag string, sdp []byte) ([]byte, error)
	// Delete ends the call's media.
	Delete(callID string) error
	// Query returns the call's media statistics.
	Query(callID string) (Stats, error)
}

var (
	_ Media = (*Relay)(nil)
	_ Media = (*Rtpengine)(nil)
)
