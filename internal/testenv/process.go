// Package testenv is the integration test rig: it starts real servers
// (Redis, Prosody, ejabberd, Kamailio, rtpengine, SIPp, baresip) from their
// Debian 12 packages on loopback ports, each in its own temporary directory
// with a generated configuration, and stops them by PID when the test ends.
//
// The rig lets the CUSAX gateway (RFC 7081) be tested against the servers it
// meets in production: an XEP-0114 component session and XEP-0356 privileges
// on Prosody and ejabberd, a RFC 3261 registrar and proxy (Kamailio), an RTP
// relay speaking the ng control protocol (rtpengine), and SIP user agents
// (SIPp, baresip).
//
// Only tests import this package. Every starter calls Require first, so the
// tests that use it compile and vet everywhere and skip unless
// CUSAX_INTEGRATION=1 is set; scripts/rig/install.sh installs the packages.
//
// Readiness is always a real probe of the server (a protocol exchange or a
// bound socket) polled against a deadline, never a fixed sleep. Servers are
// stopped with SIGTERM, then SIGKILL after a grace period, from t.Cleanup.
// Started processes also get SIGKILL from the kernel if the test binary dies
// (PR_SET_PDEATHSIG). That reaches the process the rig started, not its
// children: Kamailio's workers and ejabberd's Erlang VM can outlive a test
// binary that was itself killed (they then hold only their random ports).
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvVar is the environment variable that enables integration tests.
const EnvVar = "CUSAX_INTEGRATION"

const skipMessage = "set CUSAX_INTEGRATION=1 (and run scripts/rig/install.sh as root) to run integration tests against real servers"

// Timeouts shared by the starters.
const (
	// startTimeout bounds how long a server may take to answer after start.
	startTimeout = 30 * time.Second
	// stopGrace is how long a server gets after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// pollInterval is the pause between two readiness probes.
	pollInterval = 20 * time.Millisecond
)

// Require skips the test unless CUSAX_INTEGRATION=1 is set in the
// environment. Every starter in this package calls it.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvVar) != "1" {
		t.Skip(skipMessage)
	}
}

// lookPath finds a rig binary, with a hint to the install script when it is
// missing.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("testenv: %s not found (run scripts/rig/install.sh as root): %w", name, err)
	}
	return p, nil
}

// procSpec describes one server process to start.
type procSpec struct {
	name    string   // short name for logs ("redis")
	path    string   // executable
	args    []string // arguments, without argv[0]
	env     []string // added to the test's environment
	dir     string   // working directory; the log file goes here too
	logName string   // log file name in dir; default name+".log"
	// group puts the process in its own process group and signals the
	// whole group, for servers that fork helpers (ejabberd's erl chain).
	group bool
	// cred runs the process as another user.
	cred *syscall.Credential
}

// process is one running server. stop is idempotent and safe for
// concurrent use.
type process struct {
	spec    procSpec
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when Wait returned
	waitErr error         // valid after done is closed

	stopOnce sync.Once
	stopErr  error
}

// startProcess starts spec with its output appended to a log file in
// spec.dir. Output goes to a file rather than a pipe so that Wait never
// hangs on a grandchild that inherited the descriptors.
func startProcess(spec procSpec) (*process, error) {
	logName := spec.logName
	if logName == "" {
		logName = spec.name + ".log"
	}
	logPath := filepath.Join(spec.dir, logName)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: %s log: %w", spec.name, err)
	}
	defer logf.Close()
	if spec.cred != nil {
		if err := os.Chown(logPath, int(spec.cred.Uid), int(spec.cred.Gid)); err != nil {
			return nil, fmt.Errorf("testenv: %s log: %w", spec.name, err)
		}
	}

	cmd := exec.Command(spec.path, spec.args...)
	cmd.Dir = spec.dir
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    spec.group,
		Pdeathsig:  syscall.SIGKILL,
		Credential: spec.cred,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testenv: start %s: %w", spec.name, err)
	}
	p := &process{spec: spec, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process ID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process, or to its group when spec.group is set.
func (p *process) signal(sig syscall.Signal) {
	pid := p.pid()
	if p.spec.group {
		_ = syscall.Kill(-pid, sig)
		return
	}
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL, and waits for the
// process to be reaped. With spec.group, leftovers in the group get SIGKILL
// after the leader exited.
func (p *process) stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		p.signal(syscall.SIGTERM)
		p.stopErr = p.waitOrKill(grace)
	})
	return p.stopErr
}

// kill sends SIGKILL and waits: a crash, not a shutdown.
func (p *process) kill() error {
	p.stopOnce.Do(func() {
		p.signal(syscall.SIGKILL)
		p.stopErr = p.waitOrKill(stopGrace)
	})
	return p.stopErr
}

// waitOrKill waits up to grace for the process to exit, then kills it.
func (p *process) waitOrKill(grace time.Duration) error {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	var err error
	select {
	case <-p.done:
	case <-timer.C:
		p.signal(syscall.SIGKILL)
		<-p.done
		err = fmt.Errorf("testenv: %s (pid %d) ignored SIGTERM for %v, killed", p.spec.name, p.pid(), grace)
	}
	if p.spec.group {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
	return err
}

// logTail returns the last n bytes of the process log.
func (p *process) logTail(n int) string {
	return fileTail(p.logPath, n)
}

// fileTail returns the last n bytes of a file, or a note why it cannot.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}

// errExited reports a process that exited while we waited for it.
var errExited = errors.New("exited")

// waitReady polls probe every pollInterval until it returns nil, the
// process exits, or timeout elapses. The error names the last probe error
// and includes the tail of the process log.
func waitReady(p *process, timeout time.Duration, what string, probe func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p != nil && p.exited() {
			return fmt.Errorf("testenv: %s %w before %s (%v); log:\n%s", p.spec.name, errExited, what, p.waitErr, p.logTail(4000))
		}
		if last = probe(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			name, tail := "", ""
			if p != nil {
				name, tail = p.spec.name, "; log:\n"+p.logTail(4000)
			}
			return fmt.Errorf("testenv: %s: %s not ready after %v: %w%s", name, what, timeout, last, tail)
		}
		if p != nil {
			select {
			case <-p.done:
			case <-time.After(pollInterval):
			}
		} else {
			time.Sleep(pollInterval)
		}
	}
}

// cleanupProcess registers a t.Cleanup that stops p (through the pointer,
// so a restarted server's current process is the one stopped) and, when
// the test failed, logs the tail of the server log.
func cleanupProcess(t testing.TB, get func() *process) {
	t.Cleanup(func() {
		p := get()
		if p == nil {
			return
		}
		if err := p.stop(stopGrace); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("%s log (%s):\n%s", p.spec.name, p.logPath, p.logTail(8000))
		}
	})
}

// writeFile writes a generated configuration file.
func writeFile(path, content string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// server is what the restartable rig servers (Redis, Prosody, ejabberd)
// share: the spec they are started from and the process now running it.
// Its methods are safe for concurrent use, so failure drills can call them
// from any goroutine.
type server struct {
	mu   sync.Mutex
	spec procSpec
	p    *process
	// PID is the process ID of the current process.
	PID int
}

func (s *server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// launch starts the spec and waits until probe (described by what)
// succeeds.
func (s *server) launch(what string, probe func() error) error {
	p, err := startProcess(s.spec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p, s.PID = p, p.pid()
	s.mu.Unlock()
	return waitReady(p, startTimeout, what, probe)
}

// Kill stops the server with SIGKILL, as in a crash. It stays down until
// Restart.
func (s *server) Kill() error {
	if p := s.current(); p != nil {
		return p.kill()
	}
	return nil
}

// Stop shuts the server down (SIGTERM, SIGKILL after a grace period). It
// stays down until Restart.
func (s *server) Stop() error {
	if p := s.current(); p != nil {
		return p.stop(stopGrace)
	}
	return nil
}
