package identity

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"
)

// Credential is the SIP digest secret of one AOR (sip.auth: local), kept
// hashed: never the password, only HA1 = H(username:realm:password) for
// MD5 (RFC 2617/3261) and SHA-256 (RFC 7616, RFC 8760), with the realm and
// username they were computed over. An HA1 is as good as the password for
// the realm it names, so a Credential is a secret too: it never appears in
// an Identity, in the change feed, in an export or in logs (String and
// LogValue print REDACTED hashes).
//
// A credential belongs to an AOR of one identity. A store keeps it only
// while that identity owns the AOR: deleting the identity, or writing it
// again without the AOR, deletes it.
type Credential struct {
	// JID is the identity owning the AOR when the credential was set; the
	// store fills it in and answers only while that identity still owns
	// the AOR.
	JID string `json:"jid"`
	// Username is the digest username: the AOR's user part.
	Username string `json:"username"`
	// Realm is the digest realm (sip.domain when it was set).
	Realm string `json:"realm"`
	// HA1MD5 and HA1SHA256 are lowercase hex H(username:realm:password).
	HA1MD5    string `json:"ha1_md5"`
	HA1SHA256 string `json:"ha1_sha256"`
}

// MaxPasswordLen is the longest password NewCredential accepts, in bytes.
const MaxPasswordLen = 1024

// NewCredential hashes password for the normalised aor ("sip:alice@host")
// in realm. The digest username is the AOR's user part. The password must
// be non-empty valid UTF-8 of at most MaxPasswordLen bytes without control
// characters; it is not kept. Errors are *FieldError naming "sip",
// "realm" or "password" and never quote the password.
func NewCredential(aor, realm, password string) (Credential, error) {
	user, ok := AORUser(aor)
	if !ok {
		return Credential{}, &FieldError{Field: "sip", Value: aor, Msg: "not an AOR with a user part"}
	}
	if realm == "" || strings.ContainsAny(realm, "\"\\\r\n") {
		return Credential{}, &FieldError{Field: "realm", Value: realm, Msg: "empty or not usable in a digest challenge"}
	}
	if msg := checkPassword(password); msg != "" {
		return Credential{}, &FieldError{Field: "password", Value: "REDACTED", Msg: msg}
	}
	return Credential{
		Username:  user,
		Realm:     realm,
		HA1MD5:    hashHex(md5.New, user, realm, password),
		HA1SHA256: hashHex(sha256.New, user, realm, password),
	}, nil
}

func checkPassword(p string) string {
	switch {
	case p == "":
		return "empty"
	case len(p) > MaxPasswordLen:
		return fmt.Sprintf("longer than %d bytes", MaxPasswordLen)
	case !utf8.ValidString(p):
		return "not valid UTF-8"
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return "control characters (line breaks, tabs) are not allowed"
		}
	}
	return ""
}

// hashHex returns hex(H(parts joined by ':')).
func hashHex[H interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}](newHash func() H, parts ...string) string {
	h := newHash()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AORUser returns the user part of a normalised AOR
// ("sip:alice@example.com" -> "alice").
func AORUser(aor string) (string, bool) {
	_, rest, ok := strings.Cut(aor, ":")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '@')
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// HA1 returns the stored HA1 for a digest algorithm ("MD5" or "" for MD5,
// "SHA-256"; case-insensitive), or false if it is not one of them or was
// not stored.
func (c Credential) HA1(algorithm string) (string, bool) {
	switch {
	case algorithm == "" || strings.EqualFold(algorithm, "MD5"):
		return c.HA1MD5, c.HA1MD5 != ""
	case strings.EqualFold(algorithm, "SHA-256"):
		return c.HA1SHA256, c.HA1SHA256 != ""
	}
	return "", false
}

// valid reports whether c can be stored: a username, a realm and at least
// one well-formed HA1.
func (c Credential) valid() error {
	if c.Username == "" || c.Realm == "" {
		return &FieldError{Field: "credential", Value: "", Msg: "username and realm are required"}
	}
	if c.HA1MD5 == "" && c.HA1SHA256 == "" {
		return &FieldError{Field: "credential", Value: "", Msg: "no HA1"}
	}
	if !isLowerHex(c.HA1MD5, 32) || !isLowerHex(c.HA1SHA256, 64) {
		return &FieldError{Field: "credential", Value: "REDACTED", Msg: "HA1 is not lowercase hex of the algorithm's length"}
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if s == "" {
		return true
	}
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// String prints the credential without its hashes.
func (c Credential) String() string {
	return fmt.Sprintf("Credential{jid=%s username=%s realm=%s ha1=REDACTED}", c.JID, c.Username, c.Realm)
}

// GoString is String: %#v must not print the hashes either.
func (c Credential) GoString() string { return c.String() }

// LogValue makes slog print the credential without its hashes.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("jid", c.JID), slog.String("username", c.Username),
		slog.String("realm", c.Realm), slog.String("ha1", "REDACTED"))
}

// staleAORs lists the AORs whose credentials a write of id over old (nil
// for a new identity; id nil for a delete) must delete: the AORs old had
// and id lacks.
func staleAORs(old, id *Identity) []string {
	if old == nil {
		return nil
	}
	var out []string
	for _, a := range old.SIP {
		keep := false
		if id != nil {
			for _, b := range id.SIP {
				if a == b {
					keep = true
					break
				}
			}
		}
		if !keep {
			out = append(out, a)
		}
	}
	return out
}

// notOwnAOR is the error of a credential write for an AOR that jid does not
// own.
func notOwnAOR(jid, aor string) error {
	return &FieldError{Field: "sip", Value: aor, Msg: "not an AOR of " + jid}
}
