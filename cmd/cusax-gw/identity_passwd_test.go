package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/cusax-gw/cusax-gw/identity"
)

func TestIdentityPasswdCLI(t *testing.T) {
	cfg := testConfig(t)
	cfg.SIP.Auth = "local"
	d := startDaemon(t, cfg)
	admin := "http://" + cfg.Admin.Listen
	env := func(k string) string {
		if k == "CUSAX_ADMIN_TOKEN" {
			return "t0k"
		}
		return ""
	}
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := cmdIdentityIO(context.Background(), append([]string{"-admin", admin}, args...), strings.NewReader(stdin), &out, &errOut, env)
		return code, out.String(), errOut.String()
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("from-a-file\r\nsecond line ignored\n"), 0o600)
	const aor = "sip:alice@example.com"

	for _, step := range []struct {
		stdin     string
		args      []string
		code      int
		out, serr string
	}{
		{"", []string{"add", "-jid", "alice@example.com", "-sip", aor}, 0, `"alice@example.com"`, ""},
		{"pw\n", []string{"passwd"}, 2, "", "-sip is required"},
		{"pw\n", []string{"passwd", "-sip", aor, "hunter2"}, 2, "", `unexpected argument "hunter2"`},
		{"pw\n", []string{"passwd", "-sip", "sip:nobody@example.com"}, 1, "", "not found"},
		{"\n", []string{"passwd", "-sip", aor}, 1, "", "empty password"},
		{"a\tb\n", []string{"passwd", "-sip", aor}, 1, "", "control characters"},
		{"correct horse\n", []string{"passwd", "-sip", aor}, 0, "password set for " + aor, ""},
	} {
		code, out, serr := run(step.stdin, step.args...)
		if code != step.code || !strings.Contains(out, step.out) || !strings.Contains(serr, step.serr) {
			t.Errorf("identity %v = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr with %q", step.args, code, out, serr, step.code, step.out, step.serr)
		}
	}
	want, _ := identity.NewCredential(aor, "example.com", "correct horse")
	got, err := d.store.Credential(context.Background(), aor)
	if err != nil || got.HA1SHA256 != want.HA1SHA256 || got.HA1MD5 != want.HA1MD5 {
		t.Fatalf("stored credential = %v, %v, want the hashes of the stdin password", got, err)
	}

	// sip.auth local is wired: the gateway challenges in realm sip.domain
	// and checks the stored password.
	chal := registerVia(t, d, nil, "")
	if chal == nil {
		t.Fatal("REGISTER without credentials was not challenged")
	}
	if chal.Realm != "example.com" {
		t.Errorf("challenge realm %q, want sip.domain example.com", chal.Realm)
	}
	if again := registerVia(t, d, chal, "wrong"); again == nil {
		t.Error("REGISTER with a wrong password was not challenged again")
	}

	if code, out, serr := run("", "passwd", "-sip", aor, "-file", pwFile); code != 0 || !strings.Contains(out, "password set") {
		t.Fatalf("passwd -file = %d %s %s", code, out, serr)
	}
	want, _ = identity.NewCredential(aor, "example.com", "from-a-file")
	if got, err := d.store.Credential(context.Background(), aor); err != nil || got.HA1MD5 != want.HA1MD5 {
		t.Errorf("credential after -file = %v, %v, want the file's first line", got, err)
	}
	if code, out, serr := run("", "passwd", "-sip", aor, "-delete"); code != 0 || !strings.Contains(out, "removed") {
		t.Fatalf("passwd -delete = %d %s %s", code, out, serr)
	}
	if code, _, serr := run("", "passwd", "-sip", aor, "-delete"); code != 1 || !strings.Contains(serr, "not found") {
		t.Errorf("second passwd -delete = %d %s, want 1 not found", code, serr)
	}
}

// registerVia sends alice's REGISTER to the daemon's UDP listener, with an
// answer to chal computed from password when chal is set, and returns the
// first challenge of a 401 (nil for any other answer).
func registerVia(t *testing.T, d *daemon, chal *digest.Challenge, password string) *digest.Challenge {
	t.Helper()
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	c, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	var ruri, aor sip.Uri
	sip.ParseUri("sip:example.com", &ruri)
	sip.ParseUri("sip:alice@example.com", &aor)
	req := sip.NewRequest(sip.REGISTER, ruri)
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:alice@127.0.0.1:5999>"))
	if chal != nil {
		cr, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:example.com", Username: "alice", Password: password, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		req.AppendHeader(sip.NewHeader("Authorization", cr.String()))
	}
	var addr string
	for _, a := range d.sip.Addrs() {
		if strings.HasPrefix(a, "udp://") {
			addr = strings.TrimPrefix(a, "udp://")
		}
	}
	req.SetDestination(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, req)
	if err != nil {
		t.Fatalf("REGISTER: %v", err)
	}
	if res.StatusCode != 401 {
		return nil
	}
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		t.Fatal("401 without WWW-Authenticate")
	}
	ch, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
