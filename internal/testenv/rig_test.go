package testenv

import (
	"bufio"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBencodeRoundTrip(t *testing.T) {
	in := map[string]any{
		"command": "offer",
		"flags":   []any{"trust-address", "x"},
		"n":       -12,
		"sub":     map[string]any{"a": "", "b": 3},
	}
	b, err := bencode(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	const want = "d7:command5:offer5:flagsl13:trust-address1:xe1:ni-12e3:subd1:a0:1:bi3eee"
	if string(b) != want {
		t.Fatalf("bencode(%v) = %s, want %s", in, b, want)
	}
	out, rest, err := bdecode(b)
	if err != nil || len(rest) != 0 {
		t.Fatalf("bdecode(%s) = rest %q, err %v", b, rest, err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("bdecode(%s) = %v, want %v", b, out, in)
	}
	for _, bad := range []string{"", "d", "l", "i12", "5:abc", "d1:ae", "di1ei2ee", "x"} {
		if _, _, err := bdecode([]byte(bad)); err == nil {
			t.Errorf("bdecode(%q) = nil error, want error", bad)
		}
	}
}

func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if p < portLow || p >= portHigh || seen[p] {
			t.Fatalf("FreePort() = %d, want unused port in %d..%d", p, portLow, portHigh)
		}
		seen[p] = true
	}
	first := FreePortRange(t, 10)
	if first%2 != 0 {
		t.Fatalf("FreePortRange(10) = %d, want even", first)
	}
	for p := first; p < first+10; p++ {
		if seen[p] {
			t.Fatalf("FreePortRange(10) = %d overlaps FreePort %d", first, p)
		}
	}
}

func TestRedis(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	if err := redisPing(r.Addr); err != nil {
		t.Fatalf("PING %s = %v", r.Addr, err)
	}
	if got := redisInline(t, r.Addr, "SET k v"); got != "+OK" {
		t.Fatalf("SET k v = %q, want +OK", got)
	}
	if got := redisInline(t, r.Addr, "GET k"); got != "$1" {
		t.Fatalf("GET k = %q, want $1 (bulk string v)", got)
	}
	pid := r.PID
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := redisPing(r.Addr); err == nil {
		t.Fatal("PING after Kill succeeded, want error")
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	if r.PID == pid {
		t.Fatalf("PID after Restart = %d, want a new process", r.PID)
	}
	if got := redisInline(t, r.Addr, "GET k"); got != "$-1" {
		t.Fatalf("GET k after Restart = %q, want $-1 (no persistence)", got)
	}
}

// redisInline sends one inline command and returns the first reply line.
func redisInline(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return strings.TrimSpace(line)
}

func TestRtpengine(t *testing.T) {
	t.Parallel()
	r := StartRtpengine(t)
	if err := NGPing(r.NGAddr); err != nil {
		t.Fatalf("NGPing(%s) = %v", r.NGAddr, err)
	}
	// A query for an unknown call must come back as an error result:
	// proves the daemon parses commands, not just pings.
	resp, err := NGCommand(r.NGAddr, map[string]any{"command": "query", "call-id": "no-such-call"}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp["result"] != "error" {
		t.Fatalf("query unknown call = %v, want result error", resp)
	}
	if r.PortMax-r.PortMin+1 != rtpenginePorts {
		t.Fatalf("port range %d..%d, want %d ports", r.PortMin, r.PortMax, rtpenginePorts)
	}
}
