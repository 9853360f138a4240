package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds cusax-gw once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "cusax-gw")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startBinary starts the real binary and returns once it logged that it
// started (reading its log, not sleeping), with a scanner on the rest of
// its log and the read end of its stderr pipe.
func startBinary(t *testing.T, bin string) (*exec.Cmd, *bufio.Scanner, io.Closer) {
	t.Helper()
	cfg := testConfig(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	yaml := "log: {format: text}\n" +
		"admin: {listen: \"" + cfg.Admin.Listen + "\"}\n" +
		"identity: {path: \"" + cfg.Identity.Path + "\"}\n" +
		"xmpp: {server: \"" + cfg.XMPP.Server + "\"}\n" +
		"sip: {listen: [\"" + cfg.SIP.Listen[0] + "\"], pbx: \"" + cfg.SIP.PBX + "\"}\n" +
		"rtp: {listen: 127.0.0.1, port_min: 40000, port_max: 40099}\n" +
		"shutdown: {drain: 2s}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "-config", path)
	cmd.Env = append(os.Environ(), "CUSAX_XMPP_SECRET=hunter2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "hunter2") {
			t.Errorf("secret in log: %s", sc.Text())
		}
		if strings.Contains(sc.Text(), `msg="gateway started"`) {
			return cmd, sc, stderr
		}
	}
	t.Fatalf("daemon exited before starting: %v", sc.Err())
	return nil, nil, nil
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	bin := buildBinary(t)
	cmd, sc, _ := startBinary(t, bin)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sawStopped bool
	for sc.Scan() {
		sawStopped = sawStopped || strings.Contains(sc.Text(), `msg="gateway stopped"`)
	}
	if code := exitCode(cmd.Wait()); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if !sawStopped {
		t.Error(`no "gateway stopped" log line`)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start))
}

// TestClosedStderr: the reader of the daemon's stderr goes away (journald
// stopped, a closed pipe): its log writes fail with EPIPE, which must not
// kill it (Go's default for fd 2 is to die of SIGPIPE); SIGTERM still ends
// it cleanly.
func TestClosedStderr(t *testing.T) {
	bin := buildBinary(t)
	cmd, _, pipe := startBinary(t, bin)
	pipe.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The shutdown lines are written (and fail) on the way out.
	if code := exitCode(cmd.Wait()); code != 0 {
		t.Errorf("exit code after SIGTERM with stderr closed = %d (%v), want 0", code, cmd.ProcessState)
	}
}
