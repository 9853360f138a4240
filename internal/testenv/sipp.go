package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SIPp exit codes (sipp(1)).
const (
	// SIPpOK: every call succeeded.
	SIPpOK = 0
	// SIPpCallsFailed: at least one call failed.
	SIPpCallsFailed = 1
	// SIPpTimedOut is what RunSIPp reports when it had to kill SIPp.
	SIPpTimedOut = -1
)

// SIPpResult is the outcome of one SIPp run.
type SIPpResult struct {
	// ExitCode is SIPp's exit status: 0 all calls succeeded, 1 some call
	// failed, 97 stopped by an internal command, 99 normal exit without
	// calls processed, 255 (-1) fatal error, 254 (-2) fatal error binding
	// a socket; SIPpTimedOut when the rig killed it.
	ExitCode int
	// Output is SIPp's standard output and error (its final statistics
	// screen is at the end).
	Output string
	// Dir is the working directory, where -trace_* files go.
	Dir string
}

// SIPpPath returns the path of the sipp binary (Debian package
// sip-tester).
func SIPpPath() (string, error) {
	return lookPath("sipp")
}

// sippArgs adds the options the rig always wants unless args set them:
// -nostdin (no terminal), -i 127.0.0.1, and a free media port (-mp,
// default 6000, which the uas scenario binds along with port+2). No -cp:
// without it SIPp takes the first free control port from 8888 on, while a
// port chosen here can be taken by another process before SIPp binds it
// ("Unable to bind remote control socket", exit 254).
func sippArgs(t testing.TB, args []string) []string {
	t.Helper()
	out := slices.Clone(args)
	if !slices.Contains(args, "-nostdin") {
		out = append([]string{"-nostdin"}, out...)
	}
	if !slices.Contains(args, "-i") {
		out = append([]string{"-i", "127.0.0.1"}, out...)
	}
	if !slices.Contains(args, "-mp") {
		out = append([]string{"-mp", strconv.Itoa(FreePortRange(t, 4))}, out...)
	}
	return out
}

// RunSIPp runs sipp with args in a temp dir and waits for it to exit,
// killing it after timeout (ExitCode SIPpTimedOut). The rig adds -nostdin,
// -i 127.0.0.1 and free -cp/-mp ports unless args set them. It fails the
// test only if sipp cannot be started.
func RunSIPp(t testing.TB, timeout time.Duration, args ...string) SIPpResult {
	t.Helper()
	Require(t)
	path, err := SIPpPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "sipp.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, sippArgs(t, args)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	res := SIPpResult{Dir: dir}
	b, _ := os.ReadFile(out.Name())
	res.Output = string(b)
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.ExitCode = SIPpTimedOut
		res.Output += fmt.Sprintf("\n(testenv: sipp killed after %v)", timeout)
	case err == nil:
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	default:
		t.Fatalf("testenv: sipp: %v", err)
	}
	return res
}

// SIPpUAS is a SIPp user agent server running in the background, started
// by StartSIPpUAS. Its methods are safe for concurrent use.
type SIPpUAS struct {
	// Addr is its SIP address, host:port on 127.0.0.1 (UDP unless args
	// chose another transport).
	Addr string
	// PID is the process ID.
	PID int

	p        *process
	waitOnce sync.Once
	res      SIPpResult
}

// StartSIPpUAS starts `sipp -sn uas` (or the scenario args choose, e.g.
// -sf FILE) on a free port, with -nostdin, -i 127.0.0.1 and free -cp/-mp
// ports unless args set them, and waits until its SIP socket is bound. It
// is stopped when the test ends if it is still running. Pass -m N to make
// it exit by itself after N calls, then Wait for its result.
func StartSIPpUAS(t testing.TB, args ...string) *SIPpUAS {
	t.Helper()
	Require(t)
	path, err := SIPpPath()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(args, "-sn") && !slices.Contains(args, "-sf") {
		args = append([]string{"-sn", "uas"}, args...)
	}
	port := FreePort(t)
	if i := slices.Index(args, "-p"); i >= 0 && i+1 < len(args) {
		if port, err = strconv.Atoi(args[i+1]); err != nil {
			t.Fatalf("testenv: sipp -p %q", args[i+1])
		}
	} else {
		args = append([]string{"-p", strconv.Itoa(port)}, args...)
	}
	dir := t.TempDir()
	p, err := startProcess(procSpec{name: "sipp-uas", path: path, args: sippArgs(t, args), dir: dir, logName: "sipp.out"})
	if err != nil {
		t.Fatal(err)
	}
	u := &SIPpUAS{Addr: hostPort(port), PID: p.pid(), p: p}
	cleanupProcess(t, func() *process { return p })
	err = waitReady(p, startTimeout, "SIP socket bound", func() error {
		ok, err := udpBound(port)
		if err == nil && !ok {
			err = fmt.Errorf("udp port %d not bound", port)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Wait waits up to timeout for the UAS to exit by itself (after -m N
// calls), kills it after that, and returns its result.
func (u *SIPpUAS) Wait(timeout time.Duration) SIPpResult {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-u.p.done:
		return u.result(false)
	case <-timer.C:
		_ = u.p.kill()
		return u.result(true)
	}
}

// Stop terminates the UAS (SIGTERM) and returns its result; ExitCode is
// then SIPpTimedOut unless it had already exited.
func (u *SIPpUAS) Stop() SIPpResult {
	exited := u.p.exited()
	_ = u.p.stop(stopGrace)
	return u.result(!exited)
}

func (u *SIPpUAS) result(killed bool) SIPpResult {
	u.waitOnce.Do(func() {
		b, _ := os.ReadFile(u.p.logPath)
		u.res = SIPpResult{Output: string(b), Dir: u.p.spec.dir, ExitCode: u.p.cmd.ProcessState.ExitCode()}
		if killed {
			u.res.ExitCode = SIPpTimedOut
		}
	})
	return u.res
}
