package testenv

import (
	"fmt"
	"path/filepath"
	"testing"
)

// Sentinel is a redis-server in Sentinel mode watching one master.
type Sentinel struct {
	Addr string // 127.0.0.1:port of the Sentinel
	// URL is what cusax-gw's identity.redis.url takes to reach the master
	// through this Sentinel: redis://ADDR/0?master_name=NAME.
	URL        string
	MasterName string
	PID        int
}

// StartSentinel starts a Sentinel (redis-server --sentinel) on a free
// loopback port that monitors master under name, and stops it when the
// test ends.
func StartSentinel(t testing.TB, master *Redis, name string) *Sentinel {
	t.Helper()
	Require(t)
	path, err := lookPath("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	// Sentinel rewrites its configuration file, so it must be writable.
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s 1\nsentinel down-after-milliseconds %s 1000\n",
		port, dir, name, spaceHostPort(master.Addr), name)
	confPath := filepath.Join(dir, "sentinel.conf")
	if err := writeFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProcess(procSpec{name: "sentinel", path: path, args: []string{confPath, "--sentinel"}, dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cleanupProcess(t, func() *process { return p })
	s := &Sentinel{Addr: hostPort(port), MasterName: name, PID: p.pid()}
	s.URL = "redis://" + s.Addr + "/0?master_name=" + name
	if err := waitReady(p, startTimeout, "PING", func() error { return redisPing(s.Addr) }); err != nil {
		t.Fatal(err)
	}
	return s
}

// spaceHostPort turns "127.0.0.1:6379" into "127.0.0.1 6379".
func spaceHostPort(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i] + " " + addr[i+1:]
		}
	}
	return addr
}
