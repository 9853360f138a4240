package main

import (
	"bufio"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// Helpers for the end-to-end tests: the real cusax-gw binary as a child
// process (configured by a YAML file, observed through its admin HTTP
// server and its log), and real XMPP c2s clients.

// gatewayProc is one running cusax-gw binary.
type gatewayProc struct {
	t       *testing.T
	bin     string
	cfgPath string
	admin   string // host:port of the admin server
	token   string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// gatewayPorts are the addresses one gateway listens on.
type gatewayPorts struct {
	SIP, Admin int
	RTPMin     int // even; 40 ports
}

func newGatewayPorts(t *testing.T) gatewayPorts {
	t.Helper()
	rtp := testenv.FreePortRange(t, 42)
	if rtp%2 == 1 {
		rtp++
	}
	return gatewayPorts{SIP: testenv.FreePort(t), Admin: testenv.FreePort(t), RTPMin: rtp}
}

// startGateway writes yaml to a config file in a temp dir and runs `bin
// run -config FILE` until the test ends; it returns once /readyz answers
// 200. The log goes to a file (logPath), printed when the test fails.
func startGateway(t *testing.T, bin, yaml, token string, admin int) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	g := &gatewayProc{t: t, bin: bin, cfgPath: filepath.Join(dir, "config.yaml"),
		admin: fmt.Sprintf("127.0.0.1:%d", admin), token: token, logPath: filepath.Join(dir, "gateway.log")}
	if err := os.WriteFile(g.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	g.start()
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("gateway %s log:\n%s", g.admin, g.log())
		}
	})
	return g
}

func (g *gatewayProc) start() {
	t := g.t
	t.Helper()
	logf, err := os.OpenFile(g.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	g.cmd = exec.Command(g.bin, "run", "-config", g.cfgPath)
	g.cmd.Dir = filepath.Dir(g.cfgPath)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		g.waitErr = cmd.Wait()
		close(done)
	}(g.cmd, g.done)
	g.waitUntil(30*time.Second, "/readyz 200", func() bool {
		code, _ := g.get("/readyz")
		return code == 200
	})
}

// exited reports whether the process has exited.
func (g *gatewayProc) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// waitUntil polls cond every 20 ms until it holds; it fails the test when
// the process exits or timeout (a bound on a hang) passes.
func (g *gatewayProc) waitUntil(timeout time.Duration, what string, cond func() bool) {
	g.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-g.done:
			g.t.Fatalf("gateway %s exited (%v) waiting for %s", g.admin, g.waitErr, what)
		case <-deadline.C:
			g.t.Fatalf("gateway %s: no %s within %v", g.admin, what, timeout)
		case <-tick.C:
		}
	}
}

// signal sends sig to the process.
func (g *gatewayProc) signal(sig syscall.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatal(err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code, or -1 (and kills it) when it did not exit in time.
func (g *gatewayProc) wait(timeout time.Duration) int {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-g.done:
		return exitCode(g.waitErr)
	case <-timer.C:
		g.kill()
		return -1
	}
}

// kill ends the process with SIGKILL (a crash) and reaps it.
func (g *gatewayProc) kill() {
	if g.cmd == nil || g.exited() {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.done
}

func (g *gatewayProc) log() string {
	b, _ := os.ReadFile(g.logPath)
	return string(b)
}

// get fetches path from the admin server with the bearer token; code 0
// means it did not answer.
func (g *gatewayProc) get(path string) (int, string) {
	return g.do("GET", path, "")
}

func (g *gatewayProc) do(method, path, body string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+g.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metrics scrapes /metrics and returns every sample by its series as
// written in the text format: `name` or `name{a="x",b="y"}`.
func (g *gatewayProc) metrics() map[string]float64 {
	g.t.Helper()
	code, body := g.get("/metrics")
	if code != 200 {
		g.t.Fatalf("GET /metrics = %d %s", code, body)
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m
}

// metric returns one series of a fresh scrape (0 when absent).
func (g *gatewayProc) metric(series string) float64 {
	g.t.Helper()
	return g.metrics()[series]
}

// cli runs `cusax-gw identity -config FILE args...` (the operator's CLI,
// talking to this gateway's admin API) and returns its exit code and
// output.
func (g *gatewayProc) cli(args ...string) (int, string) {
	g.t.Helper()
	cmd := exec.Command(g.bin, append([]string{"identity", "-config", g.cfgPath}, args...)...)
	cmd.Dir = filepath.Dir(g.cfgPath)
	out, err := cmd.CombinedOutput()
	return exitCode(err), string(out)
}

// binaryOnce builds cusax-gw once for every end-to-end test of this run.
var binaryOnce struct {
	sync.Once
	path string
	err  error
}

// gatewayBinary returns the path of a cusax-gw built from this tree.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cusax-gw-e2e-")
		if err != nil {
			binaryOnce.err = err
			return
		}
		binaryOnce.path = filepath.Join(dir, "cusax-gw")
		out, err := exec.Command("go", "build", "-o", binaryOnce.path, ".").CombinedOutput()
		if err != nil {
			binaryOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryOnce.err != nil {
		t.Fatal(binaryOnce.err)
	}
	return binaryOnce.path
}

// waitCond polls cond every 50 ms until it holds or timeout (a bound on a
// hang) passes; it returns how long that took. state describes the last
// observation for the failure message.
func waitCond(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		last = state
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
		}
		<-tick.C
	}
}

// xclient is a real XMPP c2s client with its Serve loop.
type xclient struct {
	t    *testing.T
	s    *xmpp.Session
	done chan error
}

func dialXMPP(t *testing.T, addr, user, password string) *xclient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := testenv.DialClient(ctx, addr, jid.MustParse(user), password)
	if err != nil {
		t.Fatal(err)
	}
	c := &xclient{t: t, s: s, done: make(chan error, 1)}
	go func() { c.done <- s.Serve(nil) }()
	t.Cleanup(func() {
		_ = s.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
		}
		_ = s.Conn().Close()
	})
	return c
}

// presence sends a presence stanza of typ to `to` and makes a ping round
// trip so that the server has processed it.
func (c *xclient) presence(typ stanza.PresenceType, to string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.s.Send(ctx, stanza.Presence{Type: typ, To: jid.MustParse(to)}.Wrap(nil)); err != nil {
		c.t.Fatal(err)
	}
	if err := ping.Send(ctx, c.s, c.s.LocalAddr().Domain()); err != nil {
		c.t.Fatal(err)
	}
}

// iqResult is what the e2e tests read from an IQ result: XEP-0152 reach
// addresses and vcard-temp numbers.
type iqResult struct {
	Type  string `xml:"type,attr"`
	Addrs []struct {
		URI string `xml:"uri,attr"`
	} `xml:"pubsub>items>item>reach>addr"`
	Numbers []string `xml:"vCard>TEL>NUMBER"`
	Error   struct {
		Inner string `xml:",innerxml"`
	} `xml:"error"`
}

// get sends an IQ get with payload (an XML element) to `to`.
func (c *xclient) get(to, payload string) (iqResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.s.SendIQ(ctx, stanza.IQ{Type: stanza.GetIQ, To: jid.MustParse(to)}.Wrap(rawTokens{xml.NewDecoder(strings.NewReader(payload))}))
	if err != nil {
		return iqResult{}, err
	}
	defer resp.Close()
	var r iqResult
	if err := xml.NewTokenDecoder(resp).Decode(&r); err != nil {
		return iqResult{}, err
	}
	if r.Type == "error" {
		return r, fmt.Errorf("IQ error: %s", r.Error.Inner)
	}
	return r, nil
}

// rawTokens reads an XML text as it is written (xmlns as attributes),
// for sending a literal payload.
type rawTokens struct{ d *xml.Decoder }

func (r rawTokens) Token() (xml.Token, error) { return r.d.RawToken() }

// reachOf returns user's XEP-0152 addresses as this client sees them.
func (c *xclient) reachOf(user string) ([]string, error) {
	r, err := c.get(user, `<pubsub xmlns="http://jabber.org/protocol/pubsub"><items node="urn:xmpp:reach:0"/></pubsub>`)
	var uris []string
	for _, a := range r.Addrs {
		uris = append(uris, a.URI)
	}
	return uris, err
}

// vcardNumbersOf returns the NUMBERs of user's vcard-temp.
func (c *xclient) vcardNumbersOf(user string) ([]string, error) {
	r, err := c.get(user, `<vCard xmlns="vcard-temp"/>`)
	return r.Numbers, err
}
