package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/config"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

func redisConfig(t *testing.T, url string) *config.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Identity.Backend = "redis"
	cfg.Identity.Redis.URL = config.Secret(url)
	cfg.Identity.Path = filepath.Join(t.TempDir(), "unused.db")
	cfg.RTP.PortMin, cfg.RTP.PortMax = 40200, 40219
	return cfg
}

// waitCache waits, following the directory's change notifications, until
// the daemon's cache answers key with want ("" = absent).
func waitCache(t *testing.T, d *daemon, key identity.Key, want string) time.Duration {
	t.Helper()
	start := time.Now()
	guard := time.After(10 * time.Second)
	for {
		changed := d.dir.Changed()
		id, ok, _ := d.dir.LookupKey(key)
		if (want == "" && !ok) || (ok && id.JID == want) {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-guard:
			t.Fatalf("%s never became %q in the other daemon's cache", key, want)
		}
	}
}

func apiDo(t *testing.T, cfg *config.Config, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+cfg.Admin.Listen+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer t0k")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestTwoDaemonsShareRedis: an identity written through one gateway is
// served by the other (its cache follows the Redis change feed), and a
// Redis outage degrades both to cached lookups, visibly, until it returns.
func TestTwoDaemonsShareRedis(t *testing.T) {
	testenv.Require(t)
	redis := testenv.StartRedis(t)
	cfg1, cfg2 := redisConfig(t, redis.URL), redisConfig(t, redis.URL)
	cfg2.RTP.PortMin, cfg2.RTP.PortMax = 40220, 40239
	d1 := startDaemon(t, cfg1)
	d2 := startDaemon(t, cfg2)
	bs := d1.sip.Bindings()
	if u, ok := bs.(interface{ Unwrap() b2bua.Bindings }); ok {
		bs = u.Unwrap() // the in-memory mirror for Redis outages
	}
	if _, ok := bs.(*b2bua.RedisBindings); !ok {
		t.Errorf("registrations with identity.backend redis kept in %T, want *b2bua.RedisBindings", bs)
	}

	if code, body := apiDo(t, cfg1, "POST", "/api/v1/identities", `{"jid":"alice@example.com","sip":["sip:alice@example.com"],"tel":["+15551230001"]}`); code != 201 {
		t.Fatalf("create on gateway 1 = %d %s", code, body)
	}
	key := identity.Key{Kind: identity.KindTel, Value: "+15551230001"}
	lat := waitCache(t, d2, key, "alice@example.com")
	t.Logf("write on gateway 1 visible in gateway 2's cache after %v", lat)
	if code, body := apiDo(t, cfg2, "GET", "/api/v1/lookup?uri=tel:%2B15551230001", ""); code != 200 || !strings.Contains(body, "alice@example.com") {
		t.Errorf("lookup on gateway 2 = %d %s", code, body)
	}
	if code, body := apiDo(t, cfg2, "DELETE", "/api/v1/identities/alice@example.com", ""); code != 204 {
		t.Fatalf("delete on gateway 2 = %d %s", code, body)
	}
	waitCache(t, d1, key, "")

	// Redis goes away: cached lookups keep answering, writes fail with
	// 503, readiness says degraded; then Redis returns and writes work.
	if code, _ := apiDo(t, cfg1, "POST", "/api/v1/identities", `{"jid":"bob@example.com","tel":["+15551230002"]}`); code != 201 {
		t.Fatal("create bob")
	}
	waitCache(t, d2, identity.Key{Kind: identity.KindTel, Value: "+15551230002"}, "bob@example.com")
	if err := redis.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, body := apiDo(t, cfg2, "PUT", "/api/v1/identities/bob@example.com", `{"tel":["+15551230003"]}`); code != 503 {
		t.Errorf("write with Redis down = %d %s, want 503", code, body)
	}
	if state, detail := d2.dir.Status(); state != "degraded" {
		t.Errorf("identity status with Redis down = %s (%s), want degraded", state, detail)
	}
	if code, body := apiDo(t, cfg2, "GET", "/api/v1/lookup?uri=%2B15551230002", ""); code != 200 || !strings.Contains(body, "bob@example.com") {
		t.Errorf("cached lookup with Redis down = %d %s, want bob", code, body)
	}
	if code, body := apiDo(t, cfg2, "GET", "/readyz", ""); code != 200 || !strings.Contains(body, "degraded") {
		t.Errorf("/readyz with Redis down = %d %s, want 200 with identity degraded", code, body)
	}
	if err := redis.Restart(); err != nil {
		t.Fatal(err)
	}
	// The restarted Redis is empty (no persistence in the rig): a write
	// succeeds again and reaches the other gateway.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		code, _ := apiDo(t, cfg2, "PUT", "/api/v1/identities/carol@example.com", `{"tel":["+15551230004"]}`)
		if code == 200 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("writes never recovered after Redis restarted (last %d)", code)
		case <-d2.dir.Changed():
		case <-time.After(200 * time.Millisecond): // the client redials on its own schedule
		}
	}
	waitCache(t, d1, identity.Key{Kind: identity.KindTel, Value: "+15551230004"}, "carol@example.com")
}
