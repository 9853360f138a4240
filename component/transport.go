package component

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// ErrNotGranted is returned, before anything is sent, for a privileged IQ
// whose payload namespace and type the server's XEP-0356 advert did not
// grant. Prosody breaks the component stream when it receives one.
var ErrNotGranted = errors.New("component: privileged IQ not granted")

// StanzaError is an XMPP error reply (RFC 6120 section 8.3) to an IQ the
// component sent.
type StanzaError struct {
	Type      string // cancel, modify, auth, wait, continue
	Condition string // e.g. item-not-found, forbidden
	Text      string
}

// Error returns e.g. "component: stanza error: cancel item-not-found (text)".
func (e *StanzaError) Error() string {
	s := "component: stanza error: " + e.Type + " " + e.Condition
	if e.Text != "" {
		s += " (" + e.Text + ")"
	}
	return s
}

// stanzaError returns the error of an IQ of type error, or a generic one.
func stanzaError(iq *node) *StanzaError {
	e := &StanzaError{Condition: "undefined-condition"}
	el := iq.child("*", "error")
	if el == nil {
		return e
	}
	e.Type = el.attr("type")
	for _, k := range el.elements() {
		if k.Name.Space != nsStanzas {
			continue
		}
		if k.Name.Local == "text" {
			e.Text = strings.TrimSpace(k.text())
		} else {
			e.Condition = k.Name.Local
		}
	}
	return e
}

// isCondition reports whether err is a StanzaError with condition cond.
func isCondition(err error, cond string) bool {
	var se *StanzaError
	return errors.As(err, &se) && se.Condition == cond
}

// iqSender sends an IQ of type get or set and returns the reply stanza.
type iqSender interface {
	sendIQ(ctx context.Context, iq stanza.IQ, payload *node) (*node, error)
}

// sessionSender sends IQs over a served mellium session. SendIQ is safe
// for concurrent use; it must never be called from a mux handler.
type sessionSender struct{ s *xmpp.Session }

func (s sessionSender) sendIQ(ctx context.Context, iq stanza.IQ, payload *node) (*node, error) {
	resp, err := s.s.SendIQ(ctx, iq.Wrap(payload.tokens()))
	if err != nil {
		return nil, err
	}
	// Read the whole reply, then close at once: Serve is blocked until then.
	n, err := parseTree(resp)
	if cerr := resp.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// privilegedIQ sends payload as an IQ of type typ from user (a bare JID of
// the users' domain) to user, wrapped per XEP-0356 version 2, and returns
// the user's reply IQ unwrapped from <privilege><forwarded/></privilege>.
// It refuses, with ErrNotGranted and without sending anything, a payload
// namespace and type that p does not grant. An error reply is returned as a
// *StanzaError (Prosody reports every error of the wrapped IQ as
// internal-server-error).
func privilegedIQ(ctx context.Context, send iqSender, p Privileges, from, user jid.JID, typ stanza.IQType, payload *node) (*node, error) {
	if p.Version != 2 || !p.CanIQ(payload.Name.Space, string(typ)) {
		return nil, fmt.Errorf("%w: %s %s", ErrNotGranted, typ, payload.Name.Space)
	}
	inner := elem(nsClient, "iq", payload).
		withAttr("type", string(typ)).withAttr("id", randomID()).
		withAttr("from", user.String()).withAttr("to", user.String())
	outer := stanza.IQ{Type: typ, From: from, To: user}
	resp, err := send.sendIQ(ctx, outer, elem(NSPrivilege2, "privileged_iq", inner))
	if err != nil {
		return nil, err
	}
	if resp.attr("type") == string(stanza.ErrorIQ) {
		return nil, stanzaError(resp)
	}
	fwd := resp.child(NSPrivilege2, "privilege").child(nsForward, "forwarded")
	reply := fwd.child("*", "iq")
	if reply == nil {
		return nil, errors.New("component: privileged IQ reply without <privilege><forwarded><iq/>")
	}
	if reply.attr("type") == string(stanza.ErrorIQ) {
		return nil, stanzaError(reply)
	}
	return reply, nil
}

// ownIQ sends payload as an ordinary IQ from the component to user and
// returns the reply.
func ownIQ(ctx context.Context, send iqSender, from, user jid.JID, typ stanza.IQType, payload *node) (*node, error) {
	resp, err := send.sendIQ(ctx, stanza.IQ{Type: typ, From: from, To: user}, payload)
	if err != nil {
		return nil, err
	}
	if resp.attr("type") == string(stanza.ErrorIQ) {
		return nil, stanzaError(resp)
	}
	return resp, nil
}

// apiClient calls ejabberd's HTTP admin API (mod_http_api).
type apiClient struct {
	base string // e.g. http://127.0.0.1:5280/api
	hc   *http.Client
	// turn makes the writes one at a time. ejabberd 23.01 handles a
	// send_stanza's PEP publish inside the HTTP request, in a Mnesia
	// transaction: two concurrent first publishes (each creating a node)
	// can abort one another ({cyclic, ..., pubsub_index}), and the API
	// still answers 0, so the lost publish would never be retried.
	// Made by newAPIClient, one slot.
	turn chan struct{}
}

func newAPIClient(base string, hc *http.Client) *apiClient {
	return &apiClient{base: base, hc: hc, turn: make(chan struct{}, 1)}
}

// sendStanza routes stanza as if from had sent it to to
// (POST {base}/send_stanza), one call at a time. ejabberd answers 200 with 0
// once the stanza is routed; nothing reports how the recipient handled it.
func (a *apiClient) sendStanza(ctx context.Context, from, to string, st *node) error {
	select {
	case a.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("component: ejabberd api send_stanza: %w", ctx.Err())
	}
	defer func() { <-a.turn }()
	body, err := json.Marshal(map[string]string{"from": from, "to": to, "stanza": st.String()})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.base, "/")+"/send_stanza", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("component: ejabberd api: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("component: ejabberd api send_stanza: %w", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("component: ejabberd api send_stanza: %s: %s", resp.Status, bytes.TrimSpace(out))
	}
	if s := strings.TrimSpace(string(out)); s != "0" && s != "" {
		return fmt.Errorf("component: ejabberd api send_stanza: unexpected answer %q", s)
	}
	return nil
}
