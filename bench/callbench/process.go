//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one program the harness started, with its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     string
	group   bool // signal the whole process group (Kamailio forks workers)
	done    chan struct{}
	waitErr error
}

// startProc starts path with args in dir, pinned to cpu with taskset
// (cpu < 0: not pinned). taskset execs the program, so the PID is the
// program's.
func startProc(name, dir string, cpu int, group bool, path string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	if cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(cpu), path}, args...)
		path = "taskset"
	}
	cmd := exec.Command(path, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, group: group, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	if p.group {
		_ = syscall.Kill(-p.pid(), sig)
	} else if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *proc) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	if p.group {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL) // workers left behind
	}
}

// cpu returns the CPU time the exited process used.
func (p *proc) cpu() time.Duration {
	if p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// tail returns the end of the log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return strings.TrimSpace(string(b))
}

var errExited = errors.New("exited")

// waitReady polls probe every 20 ms until it succeeds, p exits or timeout
// passes.
func waitReady(p *proc, timeout time.Duration, what string, probe func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return fmt.Errorf("%s %w before %s (%v); log:\n%s", p.name, errExited, what, p.waitErr, p.tail())
		}
		err := probe()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready after %v: %w; log:\n%s", p.name, what, timeout, err, p.tail())
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort returns a UDP and TCP port free on host now (the kernel's
// choice; it may be taken again before use, which the readiness probes
// would report).
func freePort(host string) (int, error) {
	for range 20 {
		c, err := net.ListenPacket("udp4", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, err
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(port)))
		c.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("callbench: no free port on %s", host)
}

// freePorts returns n distinct free ports on host.
func freePorts(host string, n int) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		p, err := freePort(host)
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// udpBound reports whether a UDP socket is bound to ip:port or the
// wildcard address with that port (/proc/net/udp).
func udpBound(ip string, port int) bool {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return false
	}
	a := net.ParseIP(ip).To4()
	want1 := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], port)
	want2 := fmt.Sprintf("00000000:%04X", port)
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) > 1 && (f[1] == want1 || f[1] == want2) {
			return true
		}
	}
	return false
}
