package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Rtpengine is an rtpengine daemon in userspace mode started by
// StartRtpengine.
type Rtpengine struct {
	// NGAddr is the ng control socket, UDP host:port on 127.0.0.1.
	NGAddr string
	// PortMin and PortMax bound the RTP ports it allocates on 127.0.0.1.
	PortMin, PortMax int
	// PID is the process ID.
	PID int
}

// rtpenginePorts is the size of the RTP port range given to one daemon.
const rtpenginePorts = 200

// StartRtpengine starts rtpengine without the kernel module (--table=-1),
// media and control on 127.0.0.1, one worker thread, and waits until it
// answers an ng ping. It is stopped when the test ends.
func StartRtpengine(t testing.TB) *Rtpengine {
	t.Helper()
	Require(t)
	path, err := lookPath("rtpengine")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ng := FreePort(t)
	first := FreePortRange(t, rtpenginePorts)
	r := &Rtpengine{NGAddr: hostPort(ng), PortMin: first, PortMax: first + rtpenginePorts - 1}
	p, err := startProcess(procSpec{
		name: "rtpengine",
		path: path,
		args: []string{
			"--config-file=none",
			"--table=-1",
			"--interface=127.0.0.1",
			"--listen-ng=" + r.NGAddr,
			"--foreground",
			"--log-stderr",
			"--log-level=6",
			"--pidfile=" + dir + "/rtpengine.pid",
			"--port-min=" + strconv.Itoa(r.PortMin),
			"--port-max=" + strconv.Itoa(r.PortMax),
			"--num-threads=1",
		},
		dir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.PID = p.pid()
	cleanupProcess(t, func() *process { return p })
	if err := waitReady(p, startTimeout, "ng ping", func() error { return NGPing(r.NGAddr) }); err != nil {
		t.Fatal(err)
	}
	return r
}

// NGPing sends an ng "ping" command to addr (UDP host:port) and returns
// nil if the answer is "pong" within one second.
func NGPing(addr string) error {
	resp, err := NGCommand(addr, map[string]any{"command": "ping"}, time.Second)
	if err != nil {
		return err
	}
	if got, _ := resp["result"].(string); got != "pong" {
		return fmt.Errorf("testenv: ng ping answered %v", resp)
	}
	return nil
}

// NGCommand sends one ng protocol command (a bencoded dictionary after a
// random cookie, over UDP) to addr and returns the decoded reply
// dictionary. Values in req may be string, []byte, int, []any (of those)
// and map[string]any. Decoded strings are returned as string, lists as
// []any, dictionaries as map[string]any and integers as int.
func NGCommand(addr string, req map[string]any, timeout time.Duration) (map[string]any, error) {
	var cookieRaw [8]byte
	if _, err := rand.Read(cookieRaw[:]); err != nil {
		return nil, err
	}
	cookie := hex.EncodeToString(cookieRaw[:])
	msg := []byte(cookie + " ")
	msg, err := bencode(msg, req)
	if err != nil {
		return nil, err
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("testenv: ng: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, fmt.Errorf("testenv: ng: %w", err)
	}
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("testenv: ng %v: %w", req["command"], err)
		}
		got, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok || string(got) != cookie {
			continue // a late answer to someone else's cookie
		}
		v, rest, err := bdecode(body)
		if err != nil {
			return nil, fmt.Errorf("testenv: ng reply %q: %w", body, err)
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("testenv: ng reply %q: trailing data", body)
		}
		d, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("testenv: ng reply %q: not a dictionary", body)
		}
		return d, nil
	}
}

// bencode appends the bencoding of v to b.
func bencode(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		b = strconv.AppendInt(b, int64(len(v)), 10)
		return append(append(b, ':'), v...), nil
	case []byte:
		b = strconv.AppendInt(b, int64(len(v)), 10)
		return append(append(b, ':'), v...), nil
	case int:
		b = append(b, 'i')
		return append(strconv.AppendInt(b, int64(v), 10), 'e'), nil
	case []any:
		b = append(b, 'l')
		for _, e := range v {
			var err error
			if b, err = bencode(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case []string:
		b = append(b, 'l')
		for _, e := range v {
			b, _ = bencode(b, e)
		}
		return append(b, 'e'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, 'd')
		for _, k := range keys {
			b, _ = bencode(b, k)
			var err error
			if b, err = bencode(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	default:
		return nil, fmt.Errorf("testenv: bencode: unsupported %T", v)
	}
}

var errBencode = errors.New("malformed bencode")

// bdecode decodes one value from the front of b and returns the rest.
func bdecode(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errBencode
	}
	switch c := b[0]; {
	case c == 'i':
		end := bytes.IndexByte(b, 'e')
		if end < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.Atoi(string(b[1:end]))
		if err != nil {
			return nil, nil, errBencode
		}
		return n, b[end+1:], nil
	case c == 'l':
		var l []any
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			var v any
			var err error
			if v, b, err = bdecode(b); err != nil {
				return nil, nil, err
			}
			l = append(l, v)
		}
		if len(b) == 0 {
			return nil, nil, errBencode
		}
		return l, b[1:], nil
	case c == 'd':
		d := map[string]any{}
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			k, rest, err := bdecode(b)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, errBencode
			}
			var v any
			if v, b, err = bdecode(rest); err != nil {
				return nil, nil, err
			}
			d[ks] = v
		}
		if len(b) == 0 {
			return nil, nil, errBencode
		}
		return d, b[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b, ':')
		if colon < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 || colon+1+n > len(b) {
			return nil, nil, errBencode
		}
		return string(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
	default:
		return nil, nil, errBencode
	}
}
