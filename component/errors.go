package component

import (
	"errors"
	"fmt"

	"mellium.im/xmpp/stream"
)

// Sentinel errors of package component. Test for them with errors.Is.
var (
	// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
	ErrInvalidConfig = errors.New("component: invalid config")

	// ErrHandshakeRefused is matched by a *HandshakeError: the server answered
	// the XEP-0114 handshake with a stream error (wrong secret, unknown
	// component, a second instance already connected).
	ErrHandshakeRefused = errors.New("component: handshake refused")

	// ErrStreamClosed reports that the server ended the stream cleanly
	// (</stream:stream>) while the component was serving it.
	ErrStreamClosed = errors.New("component: stream closed by server")

	// ErrAlreadyRunning is returned by Run when another Run of the same
	// Component has not returned yet.
	ErrAlreadyRunning = errors.New("component: already running")

	// ErrNoPrivilege reports input that holds no XEP-0356 <privilege/> element.
	ErrNoPrivilege = errors.New("component: no privilege element")

	// ErrForeignAdvert is returned by Probe when the only privilege adverts
	// that arrived came from another domain than Config.Domain: the server
	// grants privileges, but for other users than ours.
	ErrForeignAdvert = errors.New("component: privilege advert from another domain")
)

// HandshakeError reports that the server refused the XEP-0114 handshake.
// It never carries the secret.
type HandshakeError struct {
	// Server is the address that was dialled (Config.Server).
	Server string
	// Condition is the stream error condition, e.g. "not-authorized",
	// "conflict" or "host-unknown".
	Condition string
	// Text is the server's human-readable explanation, if it sent one.
	Text string

	err stream.Error
}

// Error returns e.g. "component: handshake with 127.0.0.1:5347 refused:
// not-authorized (Given token does not match calculated token)".
func (e *HandshakeError) Error() string {
	return fmt.Sprintf("component: handshake with %s refused: %s", e.Server, describe(e.err))
}

// Is makes errors.Is(err, ErrHandshakeRefused) true for every HandshakeError.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshakeRefused }

// Unwrap returns the stream error the server sent.
func (e *HandshakeError) Unwrap() error { return e.err }

func newHandshakeError(server string, se stream.Error) *HandshakeError {
	cond, text := condText(se)
	return &HandshakeError{Server: server, Condition: cond, Text: text, err: se}
}

// condText returns the condition of a stream error and its first text.
func condText(se stream.Error) (cond, text string) {
	cond = se.Err
	if cond == "" {
		cond = "undefined-condition"
	}
	for _, t := range se.Text {
		if t.Value != "" {
			return cond, t.Value
		}
	}
	return cond, ""
}

// describe returns "condition" or "condition (text)".
func describe(se stream.Error) string {
	cond, text := condText(se)
	if text != "" {
		return cond + " (" + text + ")"
	}
	return cond
}
