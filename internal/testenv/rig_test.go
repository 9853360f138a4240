package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/xml"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
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

// xmppTimeout bounds every XMPP exchange in these tests.
const xmppTimeout = 15 * time.Second

// checkClientLogin logs in as user@domain and checks the bound JID.
func checkClientLogin(t *testing.T, addr, domain, user, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), xmppTimeout)
	defer cancel()
	j := jid.MustParse(user + "@" + domain)
	s, err := DialClient(ctx, addr, j, password)
	if err != nil {
		t.Fatalf("DialClient(%s) = %v", j, err)
	}
	defer s.Close()
	if got := s.LocalAddr(); !got.Bare().Equal(j) || got.Resourcepart() == "" {
		t.Fatalf("bound JID = %s, want %s/<resource>", got, j)
	}
	if _, err := DialClient(ctx, addr, j, password+"-wrong"); err == nil {
		t.Fatalf("DialClient(%s) with a wrong password succeeded, want error", j)
	}
}

// privAdvert is what a component learnt from the XEP-0356 permission
// advert: access -> type, and IQ namespaces -> type.
type privAdvert struct {
	ns    string
	perms map[string]string
	iq    map[string]string
}

// componentAdvert completes a component handshake and, when wantAdvert,
// waits for the XEP-0356 permission advert (which may arrive late).
func componentAdvert(t *testing.T, addr, domain, secret string, wantAdvert bool) privAdvert {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), xmppTimeout)
	defer cancel()
	if _, err := DialComponent(ctx, addr, jid.MustParse(domain), secret+"-wrong"); err == nil {
		t.Fatalf("DialComponent(%s) with a wrong secret succeeded, want error", domain)
	}
	s, err := DialComponent(ctx, addr, jid.MustParse(domain), secret)
	if err != nil {
		t.Fatalf("DialComponent(%s) = %v", domain, err)
	}
	if !wantAdvert {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return privAdvert{}
	}
	adverts := make(chan privAdvert, 1)
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- s.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			if start.Name.Local != "message" {
				return nil
			}
			a := privAdvert{perms: map[string]string{}, iq: map[string]string{}}
			var access string
			for {
				tok, err := r.Token()
				if err != nil {
					break
				}
				se, ok := tok.(xml.StartElement)
				if !ok {
					continue
				}
				switch se.Name.Local {
				case "privilege":
					a.ns = se.Name.Space
				case "perm":
					access = attr(se, "access")
					a.perms[access] = attr(se, "type")
				case "namespace":
					// Prosody nests <namespace/> elements (see REFERENCE.md).
					a.iq[attr(se, "ns")] = attr(se, "type")
				}
			}
			if a.ns != "" {
				select {
				case adverts <- a:
				default:
				}
			}
			return nil
		}))
	}()
	defer func() {
		_ = s.Close()
		<-serveErr
	}()
	select {
	case a := <-adverts:
		return a
	case err := <-serveErr:
		t.Fatalf("component session ended before the privilege advert: %v", err)
	case <-ctx.Done():
		t.Fatal("no XEP-0356 privilege advert within", xmppTimeout)
	}
	return privAdvert{}
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func TestProsody(t *testing.T) {
	t.Parallel()
	x := StartProsody(t, ProsodyOptions{
		Domain:     "example.com",
		Users:      map[string]string{"alice": "alice-pw", "bob": "bob pw \"quoted\""},
		Privileged: true,
	})
	checkClientLogin(t, x.C2SAddr, x.Domain, "alice", "alice-pw")
	checkClientLogin(t, x.C2SAddr, x.Domain, "bob", "bob pw \"quoted\"")
	a := componentAdvert(t, x.ComponentAddr, x.Component, x.Secret, true)
	if a.ns != "urn:xmpp:privilege:2" {
		t.Errorf("advert namespace = %q, want urn:xmpp:privilege:2", a.ns)
	}
	for access, typ := range map[string]string{"roster": "get", "presence": "managed_entity", "message": "outgoing"} {
		if a.perms[access] != typ {
			t.Errorf("advert perm %s = %q, want %q (advert %+v)", access, a.perms[access], typ, a)
		}
	}
	for _, ns := range []string{"http://jabber.org/protocol/pubsub", "vcard-temp", "urn:ietf:params:xml:ns:vcard-4.0"} {
		if a.iq[ns] != "both" {
			t.Errorf("advert iq %s = %q, want both (advert %+v)", ns, a.iq[ns], a)
		}
	}

	pid := x.PID
	if err := x.Restart(); err != nil {
		t.Fatal(err)
	}
	if x.PID == pid {
		t.Fatalf("PID after Restart = %d, want a new process", x.PID)
	}
	// Accounts live in the data dir and survive a restart.
	checkClientLogin(t, x.C2SAddr, x.Domain, "alice", "alice-pw")
}

func TestKamailio(t *testing.T) {
	t.Parallel()
	k := StartKamailioOptions(t, KamailioOptions{Domains: []string{"example.com"}})
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("testenv"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	c, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		uri  string
		want int
	}{
		{"sip:" + k.Addr, 200},
		{"sip:" + k.Addr + ";transport=tcp", 200},
		{"sip:nobody@" + k.Addr, 404},   // registrar lookup, nobody registered
		{"sip:nobody@example.com", 404}, // alias is local too (sent to Addr below)
	} {
		var uri sip.Uri
		if err := sip.ParseUri(tc.uri, &uri); err != nil {
			t.Fatal(err)
		}
		req := sip.NewRequest(sip.OPTIONS, uri)
		req.SetDestination(k.Addr)
		if strings.Contains(tc.uri, "transport=tcp") {
			req.SetTransport("TCP")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := c.Do(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("OPTIONS %s: %v", tc.uri, err)
		}
		if res.StatusCode != tc.want {
			t.Errorf("OPTIONS %s = %d %s, want %d", tc.uri, res.StatusCode, res.Reason, tc.want)
		}
	}
}

func TestSIPp(t *testing.T) {
	t.Parallel()
	uas := StartSIPpUAS(t, "-m", "1")
	res := RunSIPp(t, 30*time.Second, "-sn", "uac", "-m", "1", "-timeout", "20s", uas.Addr)
	if res.ExitCode != SIPpOK || !strings.Contains(res.Output, "Successful call") {
		t.Fatalf("sipp uac -> uas exit %d, want 0; output:\n%s", res.ExitCode, tail(res.Output, 3000))
	}
	if got := uas.Wait(10 * time.Second); got.ExitCode != SIPpOK {
		t.Fatalf("sipp uas exit %d, want 0; output:\n%s", got.ExitCode, tail(got.Output, 3000))
	}
	// No UAS: the uac must fail (proves the exit status is read).
	res = RunSIPp(t, 30*time.Second, "-sn", "uac", "-m", "1", "-timeout", "3s", "-timeout_error", "-recv_timeout", "1s", "127.0.0.1:"+strconv.Itoa(FreePort(t)))
	if res.ExitCode == SIPpOK {
		t.Fatalf("sipp uac to a closed port exit 0, want failure; output:\n%s", tail(res.Output, 3000))
	}
}

func TestBaresip(t *testing.T) {
	t.Parallel()
	k := StartKamailioOptions(t, KamailioOptions{Domains: []string{"example.com"}})
	b := StartBaresip(t, BaresipOptions{Registrar: k.Addr, User: "alice", Domain: "example.com"})
	if err := b.WaitRegistered(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A call through Kamailio to the registered AOR, answered by baresip
	// (answermode auto): proves the registration landed in the location
	// table and the proxy relays to it.
	res := RunSIPp(t, 30*time.Second, "-sn", "uac", "-s", "alice", "-m", "1", "-timeout", "20s", k.Addr)
	if res.ExitCode != SIPpOK {
		t.Fatalf("sipp uac -> kamailio -> baresip exit %d, want 0; output:\n%s\nbaresip log:\n%s", res.ExitCode, tail(res.Output, 3000), fileTail(b.Dir+"/baresip.log", 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestEjabberd(t *testing.T) {
	t.Parallel()
	e := StartEjabberd(t, EjabberdOptions{
		Domain: "example.net",
		Users:  map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), xmppTimeout)
	defer cancel()
	body, err := e.API(ctx, "registered_users", map[string]string{"host": e.Domain})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	if err := json.Unmarshal(body, &users); err != nil {
		t.Fatalf("registered_users = %s: %v", body, err)
	}
	slices.Sort(users)
	if want := []string{"alice", "bob"}; !slices.Equal(users, want) {
		t.Fatalf("registered_users = %v, want %v", users, want)
	}
	checkClientLogin(t, e.C2SAddr, e.Domain, "alice", "alice-pw")
	a := componentAdvert(t, e.ComponentAddr, e.Component, e.Secret, true)
	if a.ns != "urn:xmpp:privilege:1" {
		t.Errorf("advert namespace = %q, want urn:xmpp:privilege:1", a.ns)
	}
	for access, typ := range map[string]string{"roster": "get", "presence": "managed_entity", "message": "outgoing"} {
		if a.perms[access] != typ {
			t.Errorf("advert perm %s = %q, want %q (advert %+v)", access, a.perms[access], typ, a)
		}
	}
}
