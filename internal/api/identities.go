// Package api implements the identity part of the admin HTTP API
// (/api/v1/identities, /api/v1/lookup, /api/v1/import) over an
// identity.Directory. The admin server mounts it behind its bearer-token
// check.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
)

// Body size limits: one identity, and an import.
const (
	MaxBody       = 64 << 10
	MaxImportBody = 256 << 20
	DefaultLimit  = 1000
	MaxLimit      = 10000
)

// Mounter is where routes go (the admin server).
type Mounter interface {
	HandleAPI(pattern string, h http.Handler)
}

// Identities serves the identity API.
type Identities struct {
	dir *identity.Directory
	log *slog.Logger
}

// Mount registers the identity routes on m.
func Mount(m Mounter, dir *identity.Directory, log *slog.Logger) {
	h := &Identities{dir: dir, log: log}
	m.HandleAPI("GET /api/v1/identities", http.HandlerFunc(h.list))
	m.HandleAPI("POST /api/v1/identities", http.HandlerFunc(h.create))
	m.HandleAPI("GET /api/v1/identities/{jid}", http.HandlerFunc(h.get))
	m.HandleAPI("PUT /api/v1/identities/{jid}", http.HandlerFunc(h.put))
	m.HandleAPI("DELETE /api/v1/identities/{jid}", http.HandlerFunc(h.delete))
	m.HandleAPI("GET /api/v1/lookup", http.HandlerFunc(h.lookup))
	m.HandleAPI("POST /api/v1/import", http.HandlerFunc(h.importAll))
}

// wire is the JSON form of an identity: sip and tel always arrays.
type wire struct {
	JID     string   `json:"jid"`
	SIP     []string `json:"sip"`
	Tel     []string `json:"tel"`
	Name    string   `json:"name"`
	Version uint64   `json:"version,omitempty"`
}

func toWire(id identity.Identity) wire {
	w := wire{JID: id.JID, SIP: id.SIP, Tel: id.Tel, Name: id.Name, Version: id.Version}
	if w.SIP == nil {
		w.SIP = []string{}
	}
	if w.Tel == nil {
		w.Tel = []string{}
	}
	return w
}

func (w wire) identity() identity.Identity {
	return identity.Identity{JID: w.JID, SIP: w.SIP, Tel: w.Tel, Name: w.Name}
}

// decode reads exactly one JSON value of at most limit bytes into v,
// rejecting unknown fields. It writes the error response itself.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON value")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after the JSON value")
		}
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			admin.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit))
			return false
		}
		admin.WriteError(w, http.StatusBadRequest, "body: "+jsonError(err))
		return false
	}
	return true
}

func jsonError(err error) string {
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &ute):
		return fmt.Sprintf("field %q: want %s, got %s", ute.Field, ute.Type, ute.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return err.Error()
}

// fail maps an identity error to a status and writes it.
func (h *Identities) fail(w http.ResponseWriter, err error) {
	var fe *identity.FieldError
	var ie *identity.ImportError
	switch {
	case errors.As(err, &ie):
		rows := make([]map[string]any, 0, len(ie.Rows))
		for _, r := range ie.Rows {
			rows = append(rows, map[string]any{"row": r.Row, "error": r.Err.Error()})
		}
		admin.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": ie.Error(), "rows": rows})
	case errors.As(err, &fe):
		admin.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fe.Error(), "field": fe.Field})
	case errors.Is(err, identity.ErrInvalid):
		admin.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, identity.ErrNotFound):
		admin.WriteError(w, http.StatusNotFound, "not found")
	case errors.Is(err, identity.ErrConflict):
		admin.WriteError(w, http.StatusConflict, err.Error())
	case errors.Is(err, identity.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		admin.WriteError(w, http.StatusServiceUnavailable, err.Error())
	default:
		h.log.Error("identity API failure", "err", err)
		admin.WriteError(w, http.StatusInternalServerError, "internal error (see the gateway log)")
	}
}

func (h *Identities) list(w http.ResponseWriter, r *http.Request) {
	limit := DefaultLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			admin.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("limit: want 1..%d, got %q", MaxLimit, s), "field": "limit"})
			return
		}
		limit = n
	}
	ids, next, err := h.dir.List(r.Context(), r.URL.Query().Get("after"), limit)
	if err != nil {
		h.fail(w, err)
		return
	}
	out := make([]wire, 0, len(ids))
	for _, id := range ids {
		out = append(out, toWire(id))
	}
	if next != "" {
		w.Header().Set("Link", fmt.Sprintf(`</api/v1/identities?after=%s&limit=%d>; rel="next"`, url.QueryEscape(next), limit))
	}
	admin.WriteJSON(w, http.StatusOK, out)
}

func (h *Identities) create(w http.ResponseWriter, r *http.Request) {
	var in wire
	if !decode(w, r, MaxBody, &in) {
		return
	}
	id, err := h.dir.Create(r.Context(), in.identity())
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Location", "/api/v1/identities/"+url.PathEscape(id.JID))
	admin.WriteJSON(w, http.StatusCreated, toWire(id))
}

func (h *Identities) get(w http.ResponseWriter, r *http.Request) {
	id, err := h.dir.Get(r.Context(), r.PathValue("jid"))
	if err != nil {
		h.fail(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, toWire(id))
}

func (h *Identities) put(w http.ResponseWriter, r *http.Request) {
	var in wire
	if !decode(w, r, MaxBody, &in) {
		return
	}
	norm := h.dir.Normalizer()
	path, err := norm.JID(r.PathValue("jid"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if in.JID == "" {
		in.JID = path
	} else if body, err := norm.JID(in.JID); err != nil {
		h.fail(w, err)
		return
	} else if body != path {
		admin.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("jid: body says %q, path says %q", body, path), "field": "jid"})
		return
	}
	id, err := h.dir.Put(r.Context(), in.identity())
	if err != nil {
		h.fail(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, toWire(id))
}

func (h *Identities) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.dir.Delete(r.Context(), r.PathValue("jid")); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Identities) lookup(w http.ResponseWriter, r *http.Request) {
	uri := r.URL.Query().Get("uri")
	if uri == "" {
		admin.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "uri: missing (want ?uri=tel:+15551230001, sip:…, xmpp:… or a number)", "field": "uri"})
		return
	}
	id, err := h.dir.Lookup(r.Context(), uri)
	if err != nil {
		var fe *identity.FieldError
		if errors.As(err, &fe) {
			fe.Field = "uri"
		}
		h.fail(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, toWire(id))
}

func (h *Identities) importAll(w http.ResponseWriter, r *http.Request) {
	var in []wire
	if !decode(w, r, MaxImportBody, &in) {
		return
	}
	ids := make([]identity.Identity, len(in))
	for i, x := range in {
		ids[i] = x.identity()
	}
	if err := h.dir.Import(r.Context(), ids); err != nil {
		h.fail(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, map[string]int{"imported": len(ids)})
}
