package b2bua

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/cusax-gw/cusax-gw/identity"
)

// Local authentication (sip.auth: local): the gateway itself challenges
// phones with SIP digest (RFC 3261 section 22, RFC 7616's algorithms as
// RFC 8760 brings them to SIP) against per-AOR credentials kept hashed in
// the identity store (identity.Credential: HA1 for MD5 and SHA-256 over
// user:realm:password, realm = sip.domain).
//
//   - REGISTER is challenged with 401 and WWW-Authenticate, every other
//     request with 407 and Proxy-Authenticate. Each challenge offers
//     SHA-256 first, then MD5, with qop="auth".
//   - Nonces are stateless: base64url(issued time, 8 random bytes,
//     HMAC-SHA-256 over them and the realm with Config.NonceKey). A nonce
//     older than Config.NonceLifetime is stale: a correct answer with it
//     gets a new challenge with stale=true (the phone retries without
//     asking its user). A nonce the gateway did not issue fails.
//   - The answer must name our realm, the request's Request-URI, qop=auth,
//     a cnonce and an nc that grows per nonce (a replayed nc gets a new
//     challenge); its response must match the stored HA1.
//   - The authenticated AOR (digest username @ host of the From AOR, To for
//     REGISTER) must be that From (To) AOR: valid credentials of another
//     user get 403.
//   - On success the consumed Authorization (Proxy-Authorization) header
//     is removed from the request before it is forwarded; headers for
//     other realms stay.

// Authentication modes of Config.Auth.
const (
	AuthPassthrough = "passthrough"
	AuthLocal       = "local"
)

// Credentials gives the digest credential of an AOR. identity.Directory
// satisfies it (it normalises the AOR first). Implementations are safe for
// concurrent use and honour ctx's deadline.
type Credentials interface {
	// Credential returns the credential of aor ("sip:alice@example.com"),
	// or an error matching identity.ErrNotFound when it has none.
	Credential(ctx context.Context, aor string) (identity.Credential, error)
}

// Results of cusax_sip_auth_total.
const (
	authOK         = "ok"         // authenticated
	authChallenged = "challenged" // no credentials for our realm: challenged
	authStale      = "stale"      // right answer to an expired nonce: challenged with stale=true
	authFailed     = "failed"     // wrong or malformed answer, unknown user, forged or replayed nonce
	authForbidden  = "forbidden"  // valid credentials of another AOR than From (To): 403
	authError      = "error"      // the credential store failed: 503
)

var authResults = []string{authOK, authChallenged, authStale, authFailed, authForbidden, authError}

// authLookupTimeout bounds a credential lookup whose ctx has no deadline.
const authLookupTimeout = 2 * time.Second

// maxNonceUses bounds the replay cache (nonces with an accepted nc).
const maxNonceUses = 200000

func (c *Config) setAuthDefaults() {
	if c.Auth == "" {
		c.Auth = AuthPassthrough
	}
	if c.NonceLifetime <= 0 {
		c.NonceLifetime = 5 * time.Minute
	}
	if len(c.DigestAlgorithms) == 0 {
		c.DigestAlgorithms = []string{"SHA-256", "MD5"}
	}
	if c.Auth != AuthLocal {
		return
	}
	if len(c.NonceKey) == 0 {
		c.NonceKey = make([]byte, 32)
		rand.Read(c.NonceKey) // never fails (crypto/rand)
	}
	now := c.Now
	if now == nil {
		now = time.Now
	}
	c.digest = &digestAuth{
		key: c.NonceKey, realm: c.Domain, lifetime: c.NonceLifetime, now: now,
		algs: c.DigestAlgorithms, uses: map[string]nonceUse{}, maxUses: maxNonceUses,
	}
}

func (c *Config) validateAuth() []error {
	var errs []error
	switch c.Auth {
	case AuthPassthrough:
	case AuthLocal:
		if c.Credentials == nil {
			errs = append(errs, errors.New("b2bua: auth local: no credential store"))
		}
		if c.Domain == "" || strings.ContainsAny(c.Domain, "\"\\\r\n") {
			errs = append(errs, fmt.Errorf("b2bua: auth local: the domain (digest realm) must be a host name, got %q", c.Domain))
		}
	default:
		errs = append(errs, fmt.Errorf("b2bua: auth: want passthrough or local, got %q", c.Auth))
	}
	seen := map[string]bool{}
	for _, a := range c.DigestAlgorithms {
		if (a != "SHA-256" && a != "MD5") || seen[a] {
			errs = append(errs, fmt.Errorf("b2bua: digest algorithms: want SHA-256 and/or MD5, once each, got %q", c.DigestAlgorithms))
			break
		}
		seen[a] = true
	}
	return errs
}

// authenticate checks req per Config.Auth.
//
// With "passthrough" it returns ("", true) and touches nothing.
//
// With "local" it either answers req itself on tx (401/407 challenge, 403,
// 400 for a request without From/To, 503 + Retry-After when the credential
// store fails) and returns ok=false, or returns the authenticated AOR
// ("sip:alice@example.com": scheme, user, lowercase host, as aorOf gives
// for the From URI, the To URI for REGISTER) and ok=true, after removing
// the Authorization (REGISTER) or Proxy-Authorization header it consumed.
// It never logs credentials. ctx bounds the credential lookup (2 s when it
// has no deadline).
func (b *B2BUA) authenticate(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) (aor string, ok bool) {
	if b.cfg.Auth != AuthLocal {
		return "", true
	}
	d := b.cfg.digest
	hdrName, code, reason, chalName := "Proxy-Authorization", 407, "Proxy Authentication Required", "Proxy-Authenticate"
	var target sip.Uri
	if req.Method == sip.REGISTER {
		hdrName, code, reason, chalName = "Authorization", 401, "Unauthorized", "WWW-Authenticate"
		if h := req.To(); h != nil {
			target = h.Address
		}
	} else if h := req.From(); h != nil {
		target = h.Address
	}
	if target.User == "" || target.Host == "" {
		b.authRespond(tx, req, 400, "Bad Request")
		return "", false
	}
	aor = aorOf(target)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, authLookupTimeout)
		defer cancel()
	}
	v := d.check(ctx, b.cfg.Credentials, req, hdrName, target)
	b.m.Auth.WithLabelValues(v.result).Inc()
	log := b.log.With("call_id", callID(req), "method", string(req.Method), "aor", aor, "peer", req.Source())
	switch v.result {
	case authOK:
		removeHeader(req, hdrName, v.header)
		return aor, true
	case authForbidden:
		log.Info("digest authentication: credentials of another user", "auth_aor", v.authAOR)
		b.authRespond(tx, req, 403, "Forbidden")
	case authError:
		log.Warn("digest authentication: credential store failed", "err", v.err)
		b.authRespond(tx, req, 503, "Service Unavailable", b.retryAfter())
	default:
		if v.result == authFailed {
			log.Info("digest authentication failed", "reason", v.reason)
		}
		stale := v.result == authStale || v.staleChallenge
		b.authRespond(tx, req, code, reason, d.challenges(chalName, stale)...)
	}
	return "", false
}

// authRespond answers req with a To tag (RFC 3261 section 8.2.6.2) and
// counts the response.
func (b *B2BUA) authRespond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); to != nil {
		if _, ok := to.Params.Get("tag"); !ok {
			if to.Params == nil {
				to.Params = sip.NewParams()
			}
			to.Params.Add("tag", randomTag())
		}
	}
	res.AppendHeader(b.serverHeader())
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		b.log.Debug("respond failed", "call_id", callID(req), "status", code, "err", err)
		return
	}
	b.m.response(code, "out").Inc()
}

func randomTag() string {
	var t [8]byte
	rand.Read(t[:])
	return hex.EncodeToString(t[:])
}

// removeHeader removes the header h (one of req's hdrName headers) and
// keeps the others of that name.
func removeHeader(req *sip.Request, hdrName string, h sip.Header) {
	all := req.GetHeaders(hdrName)
	for _, x := range all {
		req.RemoveHeader(x.Name())
	}
	for _, x := range all {
		if x != h {
			req.AppendHeader(x)
		}
	}
}

// digestAuth verifies digest answers: the nonce key and the replay cache.
// It is safe for concurrent use.
type digestAuth struct {
	key      []byte
	realm    string
	lifetime time.Duration
	now      func() time.Time
	algs     []string // challenged and accepted, in order ("SHA-256", "MD5")

	mu      sync.Mutex
	uses    map[string]nonceUse // nonce -> highest nc accepted
	maxUses int
}

type nonceUse struct {
	nc      uint32
	expires time.Time
}

// nonce layout: issued (unix ns, 8 bytes) | random (8) | MAC (16).
const (
	nonceRaw = 8 + 8 + 16
	nonceLen = (nonceRaw*8 + 5) / 6 // base64url, no padding
)

// newNonce returns a fresh nonce.
func (d *digestAuth) newNonce() string {
	var b [nonceRaw]byte
	binary.BigEndian.PutUint64(b[:8], uint64(d.now().UnixNano()))
	rand.Read(b[8:16])
	copy(b[16:], d.mac(b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (d *digestAuth) mac(msg []byte) []byte {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte("cusax-gw digest nonce\x00"))
	m.Write([]byte(d.realm))
	m.Write([]byte{0})
	m.Write(msg)
	return m.Sum(nil)[:16]
}

type nonceState int

const (
	nonceBad nonceState = iota
	nonceFresh
	nonceExpired
)

// checkNonce reports whether nonce was issued with our key, and whether it
// is still within its lifetime.
func (d *digestAuth) checkNonce(nonce string) (nonceState, time.Time) {
	if len(nonce) != nonceLen {
		return nonceBad, time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceRaw || !hmac.Equal(b[16:], d.mac(b[:16])) {
		return nonceBad, time.Time{}
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	now := d.now()
	switch {
	case issued.After(now.Add(time.Minute)):
		return nonceBad, issued // from the future: another gateway's clock, or a forged key
	case now.Sub(issued) > d.lifetime:
		return nonceExpired, issued
	}
	return nonceFresh, issued
}

// challenges returns the challenge headers, one per algorithm in order of
// preference (RFC 8760 section 2.4), with one fresh nonce.
func (d *digestAuth) challenges(name string, stale bool) []sip.Header {
	nonce := d.newNonce()
	out := make([]sip.Header, 0, len(d.algs))
	for _, alg := range d.algs {
		c := digest.Challenge{Realm: d.realm, Nonce: nonce, Algorithm: alg, QOP: []string{"auth"}, Stale: stale}
		out = append(out, sip.NewHeader(name, c.String()))
	}
	return out
}

// verdict is what check found.
type verdict struct {
	result         string
	reason         string     // why it failed (for the log; never a secret)
	header         sip.Header // the consumed header (authOK)
	authAOR        string     // the AOR the credentials belong to
	staleChallenge bool       // challenge again with stale=true (replayed nc)
	err            error      // authError
}

// check verifies req's answer (the hdrName headers for our realm) for the
// target AOR.
func (d *digestAuth) check(ctx context.Context, store Credentials, req *sip.Request, hdrName string, target sip.Uri) verdict {
	var cr *digest.Credentials
	var hdr sip.Header
	for _, h := range req.GetHeaders(hdrName) {
		c, err := parseAuthorization(h.Value())
		if err != nil || c.Realm != d.realm {
			continue // not ours (another realm, the PBX's), or not digest
		}
		cr, hdr = c, h
		break
	}
	if cr == nil {
		return verdict{result: authChallenged}
	}
	fail := func(reason string) verdict { return verdict{result: authFailed, reason: reason} }

	state, _ := d.checkNonce(cr.Nonce)
	if state == nonceBad {
		return fail("nonce not issued by this gateway")
	}
	alg := strings.ToUpper(cr.Algorithm)
	if alg == "" {
		alg = "MD5" // RFC 2617: no algorithm means MD5
	}
	var newHash func() hash.Hash
	switch {
	case !slices.Contains(d.algs, alg):
		return fail("algorithm not offered")
	case alg == "MD5":
		newHash = md5.New
	default:
		newHash = sha256.New
	}
	if !strings.EqualFold(cr.QOP, "auth") || cr.Cnonce == "" || cr.Nc <= 0 {
		return fail("qop=auth with cnonce and nc required")
	}
	if !sameURI(cr.URI, &req.Recipient) {
		return fail("uri " + strconv.Quote(cr.URI) + " is not the Request-URI")
	}
	if cr.Username == "" || strings.ContainsAny(cr.Username, "@:") {
		return fail("bad username")
	}
	authAOR := aorOf(sip.Uri{Scheme: target.Scheme, User: cr.Username, Host: target.Host})
	stored, err := store.Credential(ctx, authAOR)
	if errors.Is(err, identity.ErrNotFound) && strings.HasPrefix(authAOR, "sips:") {
		// A phone using sips: with the password of its sip: AOR.
		stored, err = store.Credential(ctx, "sip:"+strings.TrimPrefix(authAOR, "sips:"))
	}
	if errors.Is(err, identity.ErrNotFound) || errors.Is(err, identity.ErrInvalid) {
		return fail("no credential for the username")
	}
	if err != nil {
		return verdict{result: authError, err: err}
	}
	if stored.Realm != d.realm {
		return fail("stored credential is for realm " + strconv.Quote(stored.Realm) + ": set the password again")
	}
	if stored.Username != cr.Username {
		return fail("username differs from the stored one")
	}
	ha1, ok := stored.HA1(alg)
	if !ok {
		return fail("no stored HA1 for the algorithm")
	}
	want := digestResponse(newHash, ha1, cr.Nonce, cr.Nc, cr.Cnonce, cr.QOP, string(req.Method), cr.URI)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(cr.Response))) != 1 {
		return fail("wrong response (password)")
	}
	if state == nonceExpired {
		return verdict{result: authStale}
	}
	if cr.Username != targetUser(target) {
		return verdict{result: authForbidden, authAOR: authAOR}
	}
	if !d.use(cr.Nonce, uint32(cr.Nc)) {
		return verdict{result: authFailed, reason: "nc replayed", staleChallenge: true}
	}
	return verdict{result: authOK, header: hdr, authAOR: authAOR}
}

// parseAuthorization parses one Authorization or Proxy-Authorization value
// as digest credentials.
func parseAuthorization(v string) (*digest.Credentials, error) {
	if len(v) > 4096 {
		return nil, errors.New("authorization header too long")
	}
	return digest.ParseCredentials(strings.TrimSpace(v))
}

// digestResponse computes an RFC 7616 qop=auth response:
// H(HA1:nonce:nc:cnonce:qop:H(method:uri)).
func digestResponse(newHash func() hash.Hash, ha1, nonce string, nc int, cnonce, qop, method, uri string) string {
	h := newHash()
	join := func(parts ...string) string {
		h.Reset()
		for i, p := range parts {
			if i > 0 {
				h.Write([]byte{':'})
			}
			h.Write([]byte(p))
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	ha2 := join(method, uri)
	return join(ha1, nonce, fmt.Sprintf("%08x", nc), cnonce, qop, ha2)
}

// sameURI reports whether the digest uri parameter names the Request-URI
// (RFC 3261 section 22.4: equal per the URI comparison rules; here
// scheme, user, host and port, ignoring parameters' order).
func sameURI(s string, ruri *sip.Uri) bool {
	if s == ruri.String() {
		return true
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Scheme, ruri.Scheme) && u.User == ruri.User &&
		strings.EqualFold(u.Host, ruri.Host) && u.Port == ruri.Port
}

// targetUser returns the From (To) user part with escapes decoded.
func targetUser(u sip.Uri) string {
	if s, err := url.PathUnescape(u.User); err == nil {
		return s
	}
	return u.User
}

// use records nc for nonce and reports whether it is higher than every nc
// accepted before for that nonce.
func (d *digestAuth) use(nonce string, nc uint32) bool {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if u, ok := d.uses[nonce]; ok && now.Before(u.expires) {
		if nc <= u.nc {
			return false
		}
	}
	if len(d.uses) >= d.maxUses {
		for k, u := range d.uses {
			if !now.Before(u.expires) {
				delete(d.uses, k)
			}
		}
		// Still full of live nonces: forget a random quarter (map
		// iteration order is random). Only a replay of an answer to one of
		// those nonces, within its lifetime, could pass again.
		for k := range d.uses {
			if len(d.uses) < d.maxUses*3/4 {
				break
			}
			delete(d.uses, k)
		}
	}
	d.uses[nonce] = nonceUse{nc: nc, expires: now.Add(d.lifetime + time.Minute)}
	return true
}
