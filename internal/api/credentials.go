package api

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/admin"
)

// Credentials serves the SIP digest passwords of sip.auth: local under
// /api/v1/identities/{jid}/credentials. Passwords are hashed on arrival
// (identity.NewCredential, realm = sip.domain) and never stored, logged or
// returned; neither are the hashes.
type Credentials struct {
	dir   *identity.Directory
	realm string
	log   *slog.Logger
}

// MountCredentials registers the credential routes on m. realm is the
// digest realm the hashes are computed for (sip.domain).
func MountCredentials(m Mounter, dir *identity.Directory, realm string, log *slog.Logger) {
	h := &Credentials{dir: dir, realm: realm, log: log}
	m.HandleAPI("GET /api/v1/identities/{jid}/credentials", http.HandlerFunc(h.get))
	m.HandleAPI("PUT /api/v1/identities/{jid}/credentials", http.HandlerFunc(h.put))
	m.HandleAPI("DELETE /api/v1/identities/{jid}/credentials", http.HandlerFunc(h.delete))
}

// credentialIn is the body of a PUT.
type credentialIn struct {
	SIP      string `json:"sip"`
	Password string `json:"password"`
}

// credentialOut describes a stored credential without its secret.
type credentialOut struct {
	SIP        string   `json:"sip"`
	Username   string   `json:"username"`
	Realm      string   `json:"realm"`
	Algorithms []string `json:"algorithms"`
}

func (h *Credentials) fail(w http.ResponseWriter, err error) {
	(&Identities{dir: h.dir, log: h.log}).fail(w, err)
}

func fieldMissing(w http.ResponseWriter, field, msg string) {
	admin.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": field + ": " + msg, "field": field})
}

// put sets the password of one AOR of the identity: 204.
func (h *Credentials) put(w http.ResponseWriter, r *http.Request) {
	var in credentialIn
	if !decode(w, r, MaxBody, &in) {
		return
	}
	switch {
	case in.SIP == "":
		fieldMissing(w, "sip", `missing (want the AOR, e.g. "sip:alice@example.com")`)
		return
	case in.Password == "":
		fieldMissing(w, "password", "missing")
		return
	}
	err := h.dir.SetPassword(r.Context(), r.PathValue("jid"), in.SIP, h.realm, in.Password)
	in.Password = ""
	if err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// delete removes the password of ?sip=AOR: 204, or 404 if it has none.
func (h *Credentials) delete(w http.ResponseWriter, r *http.Request) {
	aor := r.URL.Query().Get("sip")
	if aor == "" {
		fieldMissing(w, "sip", "missing (want ?sip=sip:alice@example.com)")
		return
	}
	if err := h.dir.DeleteCredential(r.Context(), r.PathValue("jid"), aor); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// get lists which AORs of the identity have a password (never the
// hashes): 200 with a JSON array, 404 for an unknown JID.
func (h *Credentials) get(w http.ResponseWriter, r *http.Request) {
	id, err := h.dir.Get(r.Context(), r.PathValue("jid"))
	if err != nil {
		h.fail(w, err)
		return
	}
	out := []credentialOut{}
	for _, aor := range id.SIP {
		c, err := h.dir.Credential(r.Context(), aor)
		if errors.Is(err, identity.ErrNotFound) {
			continue
		}
		if err != nil {
			h.fail(w, err)
			return
		}
		co := credentialOut{SIP: aor, Username: c.Username, Realm: c.Realm, Algorithms: []string{}}
		for _, alg := range []string{"SHA-256", "MD5"} {
			if _, ok := c.HA1(alg); ok {
				co.Algorithms = append(co.Algorithms, alg)
			}
		}
		out = append(out, co)
	}
	admin.WriteJSON(w, http.StatusOK, out)
}
