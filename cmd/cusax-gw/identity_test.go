package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cusax-gw/cusax-gw/internal/config"
)

// startDaemon runs a daemon for cfg until the test ends.
func startDaemon(t *testing.T, cfg *config.Config) *daemon {
	t.Helper()
	d, stop := runDaemon(t, cfg, slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run = %v", err)
		}
	})
	return d
}

// runDaemon starts a daemon for cfg, returns once it has started, and
// returns a stop function that ends it and returns what run returned.
func runDaemon(t *testing.T, cfg *config.Config, log *slog.Logger) (*daemon, func() error) {
	t.Helper()
	d, err := newDaemon(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.run(ctx) }()
	select {
	case <-d.started:
	case err := <-done:
		cancel()
		t.Fatalf("run returned before start: %v", err)
	}
	return d, func() error { cancel(); return <-done }
}

func TestIdentityCLI(t *testing.T) {
	cfg := testConfig(t)
	startDaemon(t, cfg)
	admin := "http://" + cfg.Admin.Listen
	env := func(k string) string {
		if k == "CUSAX_ADMIN_TOKEN" {
			return "t0k"
		}
		return ""
	}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := cli(context.Background(), append([]string{"identity", "-admin", admin}, args...), &out, &errOut, env)
		return code, out.String(), errOut.String()
	}
	dir := t.TempDir()
	csvFile := filepath.Join(dir, "people.csv")
	os.WriteFile(csvFile, []byte("jid,sip,tel,name\nbob@example.com,sip:bob@example.com,+15551230002,Bob\ncarol@example.com,,+15551230003;+15551230004,Carol\n"), 0o600)
	badFile := filepath.Join(dir, "bad.csv")
	os.WriteFile(badFile, []byte("jid,tel\ndave@example.com,+15551230005\nerin@example.com,not-a-number\n"), 0o600)

	for _, step := range []struct {
		args      []string
		code      int
		out, serr string
	}{
		{[]string{"add", "-jid", "alice@example.com", "-sip", "sip:alice@example.com", "-tel", "+1 (555) 123-0001", "-name", "Alice"}, 0, `"+15551230001"`, ""},
		{[]string{"add", "-jid", "mallory@example.com", "-tel", "+15551230001"}, 1, "", "already belongs to alice@example.com"},
		{[]string{"add", "-sip", "sip:x@example.com"}, 2, "", "-jid is required"},
		{[]string{"get", "tel:+15551230001"}, 0, `"alice@example.com"`, ""},
		{[]string{"get", "sip:alice@example.com"}, 0, `"Alice"`, ""},
		{[]string{"get", "+15559999999"}, 1, "", "not found"},
		{[]string{"import", badFile}, 1, "", badFile + ":3: tel[0]:"},
		{[]string{"get", "dave@example.com"}, 1, "", "not found"},
		{[]string{"import", csvFile}, 0, "imported 2 identities", ""},
		{[]string{"list"}, 0, "carol@example.com  ", ""},
		{[]string{"rm", "nobody@example.com"}, 1, "", "not found"},
		{[]string{"frob"}, 2, "", `unknown verb "frob"`},
	} {
		code, out, serr := run(step.args...)
		if code != step.code || !strings.Contains(out, step.out) || !strings.Contains(serr, step.serr) {
			t.Errorf("identity %v = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr with %q", step.args, code, out, serr, step.code, step.out, step.serr)
		}
	}

	// export, wipe, import the export: the same map again.
	code, exported, serr := run("export")
	if code != 0 {
		t.Fatalf("export = %d %s", code, serr)
	}
	for _, jid := range []string{"alice@example.com", "bob@example.com", "carol@example.com"} {
		if code, _, serr := run("rm", jid); code != 0 {
			t.Fatalf("rm %s = %d %s", jid, code, serr)
		}
	}
	if _, out, _ := run("export"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("export of the empty map = %q, want []", out)
	}
	exportFile := filepath.Join(dir, "export.yaml")
	os.WriteFile(exportFile, []byte(exported), 0o600)
	if code, out, serr := run("import", exportFile); code != 0 || !strings.Contains(out, "imported 3") {
		t.Fatalf("import of the export = %d %s %s", code, out, serr)
	}
	if _, again, _ := run("export"); again != exported {
		t.Errorf("export after re-import differs:\n%s\nwant\n%s", again, exported)
	}
}

func TestIdentityCLINeedsToken(t *testing.T) {
	cfg := testConfig(t)
	startDaemon(t, cfg)
	var out, errOut bytes.Buffer
	code := cli(context.Background(), []string{"identity", "-admin", "http://" + cfg.Admin.Listen, "list"}, &out, &errOut, func(string) string { return "" })
	if code != 1 || !strings.Contains(errOut.String(), "CUSAX_ADMIN_TOKEN") {
		t.Errorf("list without token = %d %q, want 1 mentioning CUSAX_ADMIN_TOKEN", code, errOut.String())
	}
}
