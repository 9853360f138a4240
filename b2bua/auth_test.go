package b2bua

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// recordTx is a server transaction that records the responses.
type recordTx struct {
	sip.ServerTransaction // nil: authenticate only responds
	mu                    sync.Mutex
	res                   []*sip.Response
}

func (tx *recordTx) Respond(res *sip.Response) error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.res = append(tx.res, res)
	return nil
}

func (tx *recordTx) only(t *testing.T) *sip.Response {
	t.Helper()
	if len(tx.res) != 1 {
		t.Fatalf("responses = %d, want 1", len(tx.res))
	}
	return tx.res[0]
}

// testDirectory returns a directory with alice (two AORs, a password on
// the first) and bob (a password), realm example.com.
func testDirectory(t *testing.T) *identity.Directory {
	t.Helper()
	return memoryDirectory(t, "US", []identity.Identity{
		{JID: "alice@example.com", SIP: []string{"sip:alice@example.com", "sip:alice@pbx.example.com"}},
		{JID: "bob@example.com", SIP: []string{"sip:bob@example.com"}},
	}, map[string]string{"sip:alice@example.com": "alice-pw", "sip:bob@example.com": "bob-pw"})
}

// memoryDirectory returns a directory on a memory store, normalising
// numbers for region, holding ids, with passwords (AOR sip:JID ->
// password) in realm example.com.
func memoryDirectory(t *testing.T, region string, ids []identity.Identity, passwords map[string]string) *identity.Directory {
	t.Helper()
	norm, err := identity.NewNormalizer(region)
	if err != nil {
		t.Fatal(err)
	}
	store := identity.NewMemoryStore()
	t.Cleanup(func() { store.Close() })
	d := identity.NewDirectory(store, norm, "memory", slog.New(slog.DiscardHandler),
		identity.NewMetrics(prometheus.NewRegistry()), identity.DirectoryOptions{})
	ctx := context.Background()
	for _, id := range ids {
		if _, err := d.Create(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for aor, pw := range passwords {
		if err := d.SetPassword(ctx, strings.TrimPrefix(aor, "sip:"), aor, "example.com", pw); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// localGateway returns an unbound B2BUA in local auth mode and its clock.
func localGateway(t *testing.T, creds Credentials) (*B2BUA, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b, err := New(Config{
		Listen:      []Listener{{"udp", "127.0.0.1:0"}},
		Domain:      "example.com",
		Auth:        AuthLocal,
		Credentials: creds,
		Now:         clk.Now,
	}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	return b, clk
}

// authReq builds a request from user (From; To as well for REGISTER) to
// Request-URI ruri.
func authReq(t *testing.T, method sip.RequestMethod, ruri, user string) *sip.Request {
	t.Helper()
	var r, aor sip.Uri
	if err := sip.ParseUri(ruri, &r); err != nil {
		t.Fatal(err)
	}
	if err := sip.ParseUri("sip:"+user+"@example.com", &aor); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(method, r)
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", "f1")
	req.AppendHeader(from)
	to := aor
	if method != sip.REGISTER {
		to = r
	}
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	cid := sip.CallIDHeader("auth-test")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	return req
}

// challengesOf returns the parsed challenges of a 401/407.
func challengesOf(t *testing.T, res *sip.Response, name string) []*digest.Challenge {
	t.Helper()
	var out []*digest.Challenge
	for _, h := range res.GetHeaders(name) {
		c, err := digest.ParseChallenge(h.Value())
		if err != nil {
			t.Fatalf("%s: %q: %v", name, h.Value(), err)
		}
		out = append(out, c)
	}
	return out
}

// answer adds the header with the digest of (user, password) over chal.
func answer(t *testing.T, req *sip.Request, hdr string, chal *digest.Challenge, user, password string, nc int) {
	t.Helper()
	cr, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: req.Recipient.String(),
		Username: user, Password: password, Count: nc, Cnonce: "0a4f113b"})
	if err != nil {
		t.Fatal(err)
	}
	req.AppendHeader(sip.NewHeader(hdr, cr.String()))
}

// challenge sends req without credentials and returns the challenges.
func challenge(t *testing.T, b *B2BUA, method sip.RequestMethod) []*digest.Challenge {
	t.Helper()
	req := authReq(t, method, "sip:example.com", "alice")
	tx := &recordTx{}
	if _, ok := b.authenticate(context.Background(), req, tx); ok {
		t.Fatal("authenticate without credentials = ok")
	}
	name := "WWW-Authenticate"
	if method != sip.REGISTER {
		name = "Proxy-Authenticate"
	}
	return challengesOf(t, tx.only(t), name)
}

func TestAuthPassthroughTouchesNothing(t *testing.T) {
	b, err := New(Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	req := authReq(t, sip.INVITE, "sip:bob@example.com", "alice")
	req.AppendHeader(sip.NewHeader("Proxy-Authorization", `Digest username="alice", realm="pbx", nonce="x", uri="sip:bob@example.com", response="0"`))
	before := req.String()
	aor, ok := b.authenticate(context.Background(), req, &recordTx{})
	if aor != "" || !ok || req.String() != before {
		t.Errorf("passthrough authenticate = %q, %v (request changed: %v), want \"\", true, unchanged", aor, ok, req.String() != before)
	}
}

func TestAuthChallenges(t *testing.T) {
	b, _ := localGateway(t, testDirectory(t))
	for _, tc := range []struct {
		method       sip.RequestMethod
		code         int
		name, reason string
	}{
		{sip.REGISTER, 401, "WWW-Authenticate", "Unauthorized"},
		{sip.INVITE, 407, "Proxy-Authenticate", "Proxy Authentication Required"},
		{sip.MESSAGE, 407, "Proxy-Authenticate", "Proxy Authentication Required"},
	} {
		req := authReq(t, tc.method, "sip:example.com", "alice")
		tx := &recordTx{}
		if aor, ok := b.authenticate(context.Background(), req, tx); ok || aor != "" {
			t.Fatalf("%s without credentials = %q, %v, want refused", tc.method, aor, ok)
		}
		res := tx.only(t)
		if res.StatusCode != tc.code || res.Reason != tc.reason {
			t.Errorf("%s: %d %s, want %d %s", tc.method, res.StatusCode, res.Reason, tc.code, tc.reason)
		}
		if tag, _ := res.To().Params.Get("tag"); tag == "" {
			t.Errorf("%s: %d without a To tag", tc.method, res.StatusCode)
		}
		chals := challengesOf(t, res, tc.name)
		if len(chals) != 2 || chals[0].Algorithm != "SHA-256" || chals[1].Algorithm != "MD5" {
			t.Fatalf("%s: challenges %v, want SHA-256 then MD5", tc.method, chals)
		}
		for _, c := range chals {
			if c.Realm != "example.com" || !c.SupportsQOP("auth") || len(c.QOP) != 1 || c.Stale || c.Nonce != chals[0].Nonce {
				t.Errorf("%s: challenge %+v, want realm example.com, qop auth, not stale, one nonce", tc.method, c)
			}
		}
	}
	if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(authChallenged)); got != 3 {
		t.Errorf("cusax_sip_auth_total{challenged} = %v, want 3", got)
	}
}

func TestAuthAccepts(t *testing.T) {
	b, _ := localGateway(t, testDirectory(t))
	for i, tc := range []struct {
		method sip.RequestMethod
		hdr    string
		alg    int // 0 SHA-256, 1 MD5
	}{
		{sip.REGISTER, "Authorization", 0},
		{sip.REGISTER, "Authorization", 1},
		{sip.INVITE, "Proxy-Authorization", 0},
		{sip.INVITE, "Proxy-Authorization", 1},
	} {
		chal := challenge(t, b, tc.method)[tc.alg]
		ruri := "sip:example.com"
		if tc.method == sip.INVITE {
			ruri = "sip:bob@example.com"
		}
		req := authReq(t, tc.method, ruri, "alice")
		// The PBX's credentials (another realm) come first and stay.
		pbxHdr := sip.NewHeader(tc.hdr, `Digest username="alice", realm="pbx", nonce="n", uri="`+ruri+`", response="00"`)
		req.AppendHeader(pbxHdr)
		answer(t, req, tc.hdr, chal, "alice", "alice-pw", 1)
		tx := &recordTx{}
		aor, ok := b.authenticate(context.Background(), req, tx)
		if !ok || aor != "sip:alice@example.com" || len(tx.res) != 0 {
			t.Fatalf("case %d %s %s: authenticate = %q, %v (responses %d), want sip:alice@example.com, true, none",
				i, tc.method, chal.Algorithm, aor, ok, len(tx.res))
		}
		if hs := req.GetHeaders(tc.hdr); len(hs) != 1 || hs[0].Value() != pbxHdr.Value() {
			t.Errorf("case %d: %s left = %v, want only the PBX realm's", i, tc.hdr, hs)
		}
	}
	if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(authOK)); got != 4 {
		t.Errorf("cusax_sip_auth_total{ok} = %v, want 4", got)
	}
}

// TestAuthRefuses: every way an answer can be wrong gets a new challenge
// (401 here), 403 or 503; the request keeps its header.
func TestAuthRefuses(t *testing.T) {
	dir := testDirectory(t)
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, b *B2BUA, clk *fakeClock) *sip.Request
		code    int
		stale   bool
		result  string
	}{
		{"wrong password", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			answer(t, req, "Authorization", challenge(t, b, sip.REGISTER)[0], "alice", "guess", 1)
			return req
		}, 401, false, authFailed},
		{"unknown user", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "mallory")
			answer(t, req, "Authorization", challenge(t, b, sip.REGISTER)[0], "mallory", "x", 1)
			return req
		}, 401, false, authFailed},
		{"AOR without a password", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			req.To().Address.Host = "pbx.example.com"
			chal := challenge(t, b, sip.REGISTER)[0]
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, false, authFailed},
		{"wrong realm only", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			chal.Realm = "elsewhere.example"
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, false, authChallenged},
		{"forged nonce", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			other := &digestAuth{key: []byte("another key"), realm: "example.com", now: b.cfg.Now}
			chal.Nonce = other.newNonce()
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, false, authFailed},
		{"tampered nonce", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			n := []byte(chal.Nonce)
			n[3] ^= 1 // another issue time
			chal.Nonce = string(n)
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, false, authFailed},
		{"stale nonce", func(t *testing.T, b *B2BUA, clk *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			clk.Advance(5*time.Minute + time.Second)
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, true, authStale},
		{"stale nonce, wrong password", func(t *testing.T, b *B2BUA, clk *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			clk.Advance(time.Hour)
			answer(t, req, "Authorization", chal, "alice", "guess", 1)
			return req
		}, 401, false, authFailed},
		{"uri is not the Request-URI", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[0]
			cr, _ := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:other.example.com", Username: "alice", Password: "alice-pw", Count: 1})
			req.AppendHeader(sip.NewHeader("Authorization", cr.String()))
			return req
		}, 401, false, authFailed},
		{"no qop", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			chal := challenge(t, b, sip.REGISTER)[1]
			chal.QOP = nil // RFC 2069 style answer
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, false, authFailed},
		{"bob's credentials as alice", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			req := authReq(t, sip.INVITE, "sip:carol@example.com", "alice")
			answer(t, req, "Proxy-Authorization", challenge(t, b, sip.INVITE)[0], "bob", "bob-pw", 1)
			return req
		}, 403, false, authForbidden},
		{"replayed nc", func(t *testing.T, b *B2BUA, _ *fakeClock) *sip.Request {
			chal := challenge(t, b, sip.REGISTER)[0]
			first := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			answer(t, first, "Authorization", chal, "alice", "alice-pw", 1)
			if _, ok := b.authenticate(context.Background(), first, &recordTx{}); !ok {
				t.Fatal("first use of the nonce refused")
			}
			req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
			answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
			return req
		}, 401, true, authFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, clk := localGateway(t, dir)
			req := tc.prepare(t, b, clk)
			before := testutil.ToFloat64(b.m.Auth.WithLabelValues(tc.result))
			hdrs := len(req.GetHeaders("Authorization")) + len(req.GetHeaders("Proxy-Authorization"))
			tx := &recordTx{}
			if aor, ok := b.authenticate(context.Background(), req, tx); ok {
				t.Fatalf("authenticate = %q, true, want refused", aor)
			}
			res := tx.only(t)
			if res.StatusCode != tc.code {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.code)
			}
			if tc.code == 401 {
				chals := challengesOf(t, res, "WWW-Authenticate")
				if len(chals) != 2 || chals[0].Stale != tc.stale || chals[1].Stale != tc.stale {
					t.Errorf("challenges %+v, want two with stale=%v", chals, tc.stale)
				}
			}
			if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("cusax_sip_auth_total{%s} = %v, want %v", tc.result, got, before+1)
			}
			if n := len(req.GetHeaders("Authorization")) + len(req.GetHeaders("Proxy-Authorization")); n != hdrs {
				t.Errorf("refused request lost credentials headers: %d, want %d", n, hdrs)
			}
		})
	}
}

// The same nonce with a growing nc is fine (RFC 7616 section 3.4).
func TestAuthNonceReuse(t *testing.T) {
	b, clk := localGateway(t, testDirectory(t))
	chal := challenge(t, b, sip.REGISTER)[0]
	for nc := 1; nc <= 3; nc++ {
		clk.Advance(time.Minute)
		req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
		answer(t, req, "Authorization", chal, "alice", "alice-pw", nc)
		if _, ok := b.authenticate(context.Background(), req, &recordTx{}); !ok {
			t.Fatalf("nc %d refused", nc)
		}
	}
}

// With DigestAlgorithms MD5 only, the gateway challenges and accepts MD5
// only.
func TestAuthAlgorithms(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b, err := New(Config{Listen: []Listener{{"udp", "127.0.0.1:0"}}, Domain: "example.com", Auth: AuthLocal,
		Credentials: testDirectory(t), Now: clk.Now, DigestAlgorithms: []string{"MD5"}},
		slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	chals := challenge(t, b, sip.REGISTER)
	if len(chals) != 1 || chals[0].Algorithm != "MD5" {
		t.Fatalf("challenges %+v, want MD5 only", chals)
	}
	sha := *chals[0]
	sha.Algorithm = "SHA-256"
	for _, tc := range []struct {
		chal *digest.Challenge
		ok   bool
	}{{&sha, false}, {chals[0], true}} {
		req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
		answer(t, req, "Authorization", tc.chal, "alice", "alice-pw", 1)
		if _, ok := b.authenticate(context.Background(), req, &recordTx{}); ok != tc.ok {
			t.Errorf("answer with %s: ok = %v, want %v", tc.chal.Algorithm, ok, tc.ok)
		}
	}
}

type failingCreds struct{}

func (failingCreds) Credential(context.Context, string) (identity.Credential, error) {
	return identity.Credential{}, fmt.Errorf("identity: redis: connection refused: %w", identity.ErrUnavailable)
}

func TestAuthStoreDown(t *testing.T) {
	b, _ := localGateway(t, failingCreds{})
	req := authReq(t, sip.INVITE, "sip:bob@example.com", "alice")
	answer(t, req, "Proxy-Authorization", challenge(t, b, sip.INVITE)[0], "alice", "alice-pw", 1)
	tx := &recordTx{}
	if _, ok := b.authenticate(context.Background(), req, tx); ok {
		t.Fatal("authenticate with the store down = ok")
	}
	res := tx.only(t)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Errorf("store down: %d (Retry-After %v), want 503 with Retry-After", res.StatusCode, res.GetHeader("Retry-After"))
	}
	if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(authError)); got != 1 {
		t.Errorf("cusax_sip_auth_total{error} = %v, want 1", got)
	}
}

func TestAuthConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Auth: "local", Domain: "example.com"}, "no credential store"},
		{Config{Auth: "local", Credentials: failingCreds{}}, "digest realm"},
		{Config{Auth: "ldap"}, "want passthrough or local"},
		{Config{Auth: "local", Domain: "example.com", Credentials: failingCreds{}, DigestAlgorithms: []string{"SHA-512-256"}}, "want SHA-256 and/or MD5"},
		{Config{Auth: "local", Domain: "example.com", Credentials: failingCreds{}, DigestAlgorithms: []string{"MD5", "MD5"}}, "once each"},
	} {
		tc.cfg.Listen = []Listener{{"udp", "127.0.0.1:0"}}
		_, err := New(tc.cfg, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(auth %q) = %v, want an error containing %q", tc.cfg.Auth, err, tc.want)
		}
	}
}

// Vectors computed independently: RFC 7616 section 3.9.1 (GET, HTTP) and
// a SIP REGISTER computed with Python's hashlib.
func TestDigestResponseVectors(t *testing.T) {
	const (
		rfcNonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		rfcCnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
	)
	mufasa, err := identity.NewCredential("sip:Mufasa@example.org", "http-auth@example.org", "Circle of Life")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := identity.NewCredential("sip:alice@example.com", "example.com", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                string
		sha                 bool
		ha1                 string
		nonce, cnonce, meth string
		uri, want           string
	}{
		{"RFC 7616 MD5", false, mufasa.HA1MD5, rfcNonce, rfcCnonce, "GET", "/dir/index.html", "8ca523f5e9506fed4657c9700eebdbec"},
		{"RFC 7616 SHA-256", true, mufasa.HA1SHA256, rfcNonce, rfcCnonce, "GET", "/dir/index.html", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"},
		{"SIP MD5", false, alice.HA1MD5, "NONCE", "0a4f113b", "REGISTER", "sip:example.com", "b91c237f0c2c57aafad43bdc5cf139cf"},
		{"SIP SHA-256", true, alice.HA1SHA256, "NONCE", "0a4f113b", "REGISTER", "sip:example.com", "fd6f5e9b71c35d88a7d7bb3e98819c1d596d50832619ddc12939865b28ef7210"},
	} {
		h := md5.New
		if tc.sha {
			h = sha256.New
		}
		if got := digestResponse(h, tc.ha1, tc.nonce, 1, tc.cnonce, "auth", tc.meth, tc.uri); got != tc.want {
			t.Errorf("%s: response = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestNonce(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := &digestAuth{key: []byte("k"), realm: "example.com", lifetime: 5 * time.Minute, now: clk.Now}
	n := d.newNonce()
	if len(n) != nonceLen || n == d.newNonce() {
		t.Fatalf("nonce %q (len %d), want %d characters and fresh every time", n, len(n), nonceLen)
	}
	if s, _ := d.checkNonce(n); s != nonceFresh {
		t.Errorf("fresh nonce: state %v", s)
	}
	clk.Advance(5 * time.Minute)
	if s, _ := d.checkNonce(n); s != nonceFresh {
		t.Errorf("nonce at its lifetime: state %v, want fresh", s)
	}
	clk.Advance(time.Second)
	if s, _ := d.checkNonce(n); s != nonceExpired {
		t.Errorf("nonce after its lifetime: state %v, want expired", s)
	}
	other := &digestAuth{key: []byte("k"), realm: "other.example", lifetime: time.Hour, now: clk.Now}
	for _, bad := range []string{"", "short", other.newNonce(), strings.Repeat("A", nonceLen), n[:nonceLen-1] + "!"} {
		if s, _ := d.checkNonce(bad); s != nonceBad {
			t.Errorf("checkNonce(%q) = %v, want bad", bad, s)
		}
	}
}

// The replay cache stays bounded and keeps working when full.
func TestNonceUsesBounded(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := &digestAuth{key: []byte("k"), realm: "example.com", lifetime: 5 * time.Minute, now: clk.Now,
		uses: map[string]nonceUse{}, maxUses: 100}
	for i := range 1000 {
		if !d.use(fmt.Sprint(i), 1) {
			t.Fatalf("first use of nonce %d refused", i)
		}
		if len(d.uses) > 100 {
			t.Fatalf("replay cache holds %d nonces, max 100", len(d.uses))
		}
	}
	if d.use("999", 1) {
		t.Error("replay of the newest nonce accepted")
	}
	clk.Advance(time.Hour)
	if !d.use("999", 1) {
		t.Error("nonce use after expiry of its cache entry refused")
	}
}

// FuzzAuthorization feeds arbitrary Authorization values through the
// parsing and verification path: never a panic, never an acceptance.
func FuzzAuthorization(f *testing.F) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d := &digestAuth{key: []byte("k"), realm: "example.com", lifetime: 5 * time.Minute, now: clk.Now,
		algs: []string{"SHA-256", "MD5"}, uses: map[string]nonceUse{}, maxUses: 1000}
	nonce := d.newNonce()
	f.Add(`Digest username="alice", realm="example.com", nonce="` + nonce + `", uri="sip:example.com", algorithm=SHA-256, cnonce="x", qop=auth, nc=00000001, response="00"`)
	f.Add(`Digest username="alice", realm="example.com", nonce="` + nonce + `", uri="sip:example.com", response="00"`)
	f.Add(`Digest username="al\"ice", realm="example.com", nc=zz`)
	f.Add(`Digest realm="example.com", nc=-1, qop=auth`)
	f.Add(`Digest realm="example.com",,,=,"`)
	f.Add(`Basic YWxpY2U6cHc=`)
	f.Add(`Digest `)
	f.Add(`digest REALM="example.com"`)
	creds := staticCreds{}
	var ruri sip.Uri
	if err := sip.ParseUri("sip:example.com", &ruri); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.REGISTER, ruri)
		req.AppendHeader(sip.NewHeader("Authorization", v))
		got := d.check(context.Background(), creds, req, "Authorization", sip.Uri{Scheme: "sip", User: "alice", Host: "example.com"})
		if got.result == authOK || got.result == authForbidden {
			t.Errorf("check(%q) = %s", v, got.result)
		}
	})
}

// staticCreds knows alice@example.com with password alice-pw.
type staticCreds struct{}

func (staticCreds) Credential(_ context.Context, aor string) (identity.Credential, error) {
	if aor != "sip:alice@example.com" {
		return identity.Credential{}, identity.ErrNotFound
	}
	c, err := identity.NewCredential(aor, "example.com", "alice-pw")
	c.JID = "alice@example.com"
	return c, err
}

// startLocalGateway runs a gateway in local auth mode in front of pbx.
// algs are Config.DigestAlgorithms (default when none).
func startLocalGateway(t *testing.T, pbx string, creds Credentials, algs ...string) (*B2BUA, string) {
	t.Helper()
	b := runGateway(t, Config{
		Listen:           []Listener{{"udp", "127.0.0.1:0"}},
		Domain:           "example.com",
		PBX:              "sip:" + pbx,
		PBXTimeout:       5 * time.Second,
		Auth:             AuthLocal,
		Credentials:      creds,
		DigestAlgorithms: algs,
	}, nil, nil)
	return b, listenerAddr(t, b, "udp")
}

// TestRegisterLocalAuth: over the network, the gateway challenges, the
// phone answers, and the PBX gets one REGISTER without the phone's
// Authorization.
func TestRegisterLocalAuth(t *testing.T) {
	pbx := startRegistrar(t, "")
	b, gw := startLocalGateway(t, pbx.addr, testDirectory(t))
	alice := newPhone(t, gw, "alice", "sip:alice@192.0.2.10:5062;transport=udp")

	res := alice.register("600")
	if res.StatusCode != 401 {
		t.Fatalf("first REGISTER = %d, want 401", res.StatusCode)
	}
	if pbx.last() != nil {
		t.Fatal("the PBX saw an unauthenticated REGISTER")
	}
	chal := challengesOf(t, res, "WWW-Authenticate")[0]
	req := alice.request("<"+alice.contact+">", "600")
	answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
	if res := alice.do(req); res.StatusCode != 200 {
		t.Fatalf("answered REGISTER = %d %s, want 200", res.StatusCode, res.Reason)
	}
	fwd := pbx.last()
	if fwd == nil || fwd.GetHeader("Authorization") != nil {
		t.Fatalf("PBX got %v, want a REGISTER without Authorization", fwd)
	}
	if bs, err := b.Bindings().ByAOR(context.Background(), "sip:alice@example.com"); err != nil || len(bs) != 1 {
		t.Errorf("bindings = %v, %v, want one", bs, err)
	}

	// bob's password does not register alice.
	req = alice.request("<"+alice.contact+">", "600")
	answer(t, req, "Authorization", challengesOf(t, alice.register("600"), "WWW-Authenticate")[1], "bob", "bob-pw", 1)
	if res := alice.do(req); res.StatusCode != 403 {
		t.Errorf("REGISTER of alice with bob's credentials = %d, want 403", res.StatusCode)
	}
}

// TestIntegrationSIPpRegistersWithLocalAuth runs
// testdata/sipp/register_auth.xml: SIPp answers the gateway's digest
// challenges with its password and registers through the gateway to
// Kamailio, which never sees SIPp's Authorization.
func TestIntegrationSIPpRegistersWithLocalAuth(t *testing.T) {
	testenv.Require(t)
	k := testenv.StartKamailioOptions(t, testenv.KamailioOptions{Domains: []string{"example.com"}})
	dir := memoryDirectory(t, "", []identity.Identity{{JID: "carol@example.com", SIP: []string{"sip:carol@example.com"}}},
		map[string]string{"sip:carol@example.com": "sipp-secret"})
	// SIPp 3.6 answers only the first challenge and knows only MD5.
	b, gw := startLocalGateway(t, k.Addr, dir, "MD5", "SHA-256")
	scenario, err := filepath.Abs("testdata/sipp/register_auth.xml")
	if err != nil {
		t.Fatal(err)
	}
	res := testenv.RunSIPp(t, 30*time.Second, "-sf", scenario, "-s", "carol", "-auth_uri", "example.com", "-m", "3", "-l", "1", gw)
	if res.ExitCode != testenv.SIPpOK {
		t.Fatalf("sipp exit %d:\n%s", res.ExitCode, res.Output)
	}
	if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(authOK)); got != 6 {
		t.Errorf("cusax_sip_auth_total{ok} = %v, want 6", got)
	}
	if got := testutil.ToFloat64(b.m.Requests.WithLabelValues("REGISTER", "out")); got != 6 {
		t.Errorf("REGISTERs forwarded to the PBX = %v, want 6 (only the authenticated ones)", got)
	}
	if n, _ := b.Bindings().Len(context.Background()); n != 0 {
		t.Errorf("bindings after the un-REGISTERs = %d, want 0", n)
	}

	// A wrong password gets challenged again; nothing reaches the PBX.
	bad := strings.ReplaceAll(readFile(t, scenario), "password=sipp-secret", "password=wrong")
	badFile := filepath.Join(t.TempDir(), "register_auth_wrong.xml")
	if err := os.WriteFile(badFile, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	res = testenv.RunSIPp(t, 30*time.Second, "-sf", badFile, "-s", "carol", "-auth_uri", "example.com", "-m", "1", "-l", "1", "-recv_timeout", "3000", gw)
	if res.ExitCode == testenv.SIPpOK {
		t.Errorf("sipp with a wrong password succeeded:\n%s", res.Output)
	}
	if got := testutil.ToFloat64(b.m.Auth.WithLabelValues(authFailed)); got < 1 {
		t.Errorf("cusax_sip_auth_total{failed} = %v, want at least 1", got)
	}
	if got := testutil.ToFloat64(b.m.Requests.WithLabelValues("REGISTER", "out")); got != 6 {
		t.Errorf("REGISTERs forwarded to the PBX = %v, want still 6", got)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A phone using a sips: AOR authenticates with its sip: AOR's password.
func TestAuthSIPSUsesSIPCredential(t *testing.T) {
	b, _ := localGateway(t, testDirectory(t))
	chal := challenge(t, b, sip.REGISTER)[0]
	req := authReq(t, sip.REGISTER, "sip:example.com", "alice")
	req.To().Address.Scheme = "sips"
	answer(t, req, "Authorization", chal, "alice", "alice-pw", 1)
	if aor, ok := b.authenticate(context.Background(), req, &recordTx{}); !ok || aor != "sips:alice@example.com" {
		t.Errorf("authenticate = %q, %v, want sips:alice@example.com, true", aor, ok)
	}
}
