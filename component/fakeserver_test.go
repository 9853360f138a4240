package component

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitLimit turns a hang into a readable failure. It is a watchdog, not an
// assertion about timing: every wait in these tests ends on an event.
const waitLimit = 30 * time.Second

// Wire text captured from Prosody 0.12.3 with mod_privilege; the fake server
// speaks exactly like it.
const (
	prosodyAdvert  = `<message to='cusax.example.com' from='example.com'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='get'/><perm access='message' type='outgoing'/><perm access='presence' type='managed_entity'/><perm access='iq'><namespace type='both' ns='vcard-temp'><namespace type='both' ns='urn:ietf:params:xml:ns:vcard-4.0'><namespace type='both' ns='http://jabber.org/protocol/pubsub'/></namespace></namespace></perm></privilege></message>`
	ejabberdAdvert = `<message to='cusax.example.com' from='example.com'><privilege xmlns='urn:xmpp:privilege:1'><perm type='outgoing' access='message'/><perm type='get' access='roster'/><perm type='managed_entity' access='presence'/></privilege></message>`
	notAuthorized  = `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Given token does not match calculated token</text></stream:error></stream:stream>`
	testSecret     = "s3cret-do-not-log"
)

// fakeServer is the accepting side of XEP-0114, enough of Prosody to test
// the component: stream header, SHA-1 handshake, the privilege advert,
// answers to keepalive pings, and channels that show the test what the
// component sent.
type fakeServer struct {
	secret string
	advert string // raw XML written right after a successful handshake

	// beforeAccept, if set, runs before <handshake/> is written on the
	// n-th (from 1) connection; tests use it to hold a handshake.
	beforeAccept func(n int)
	// silent connections never answer the stream header.
	silent atomic.Bool
	// ignorePings makes the server drop the component's pings.
	ignorePings atomic.Bool
	// respond, if set, may answer a stanza from the component instead of
	// passing it to the test through fakeConn.in.
	respond func(e element) (reply string, ok bool)
	// stallFirst makes the first connection send a disco#info query after
	// the handshake and then never read again: the component's answer, and
	// every write after it, blocks (on a net.Pipe).
	stallFirst atomic.Bool

	conns    chan *fakeConn // one per successful handshake
	refused  chan struct{}  // one per refused handshake
	accepted chan struct{}  // one per TCP (or pipe) connection

	n         atomic.Int32 // connections so far
	wg        sync.WaitGroup
	stopped   chan struct{} // closed by close
	closeOnce sync.Once

	mu   sync.Mutex
	open []net.Conn
	ln   net.Listener
}

// fakeConn is one authenticated stream as the server sees it.
type fakeConn struct {
	conn   net.Conn
	wmu    sync.Mutex
	in     chan element  // stanzas from the component, except pings
	pings  chan element  // pings from the component
	done   chan struct{} // closed when the connection ended
	closed atomic.Bool   // the component sent </stream:stream>
}

// element is a top-level stanza as the fake server received it.
type element struct {
	XMLName xml.Name
	Attr    []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

func (e element) attr(name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func newFakeServer(secret, advert string) *fakeServer {
	return &fakeServer{
		secret:   secret,
		advert:   advert,
		conns:    make(chan *fakeConn, 16),
		refused:  make(chan struct{}, 64),
		accepted: make(chan struct{}, 64),
		stopped:  make(chan struct{}),
	}
}

// listen starts accepting on 127.0.0.1 and returns the address; everything
// stops at the end of the test.
func (s *fakeServer) listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.serveConn(conn)
		}
	})
	t.Cleanup(s.close)
	return ln.Addr().String()
}

// close stops the listener and every connection and waits for the goroutines.
func (s *fakeServer) close() {
	s.closeOnce.Do(func() { close(s.stopped) })
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	for _, c := range s.open {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// serveConn handles conn in a goroutine owned by s.
func (s *fakeServer) serveConn(conn net.Conn) {
	s.mu.Lock()
	s.open = append(s.open, conn)
	s.mu.Unlock()
	s.wg.Go(func() {
		defer conn.Close()
		s.handle(conn)
	})
}

func (s *fakeServer) handle(conn net.Conn) {
	n := int(s.n.Add(1))
	notify(s.accepted, struct{}{})
	d := xml.NewDecoder(conn)
	if _, err := nextStart(d); err != nil { // the component's stream header
		return
	}
	if s.silent.Load() {
		_, _ = io.Copy(io.Discard, conn)
		return
	}
	id := fmt.Sprintf("stream-%d", n)
	fmt.Fprintf(conn, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' id='%s' xmlns='jabber:component:accept' from='cusax.example.com'>`, id)

	start, err := nextStart(d)
	if err != nil || start.Name.Local != "handshake" {
		return
	}
	var hs struct {
		Token string `xml:",chardata"`
	}
	if err := d.DecodeElement(&hs, &start); err != nil {
		return
	}
	sum := sha1.Sum([]byte(id + s.secret))
	if !strings.EqualFold(strings.TrimSpace(hs.Token), hex.EncodeToString(sum[:])) {
		_, _ = io.WriteString(conn, notAuthorized)
		notify(s.refused, struct{}{})
		return
	}
	if s.beforeAccept != nil {
		s.beforeAccept(n)
	}
	fc := &fakeConn{
		conn:  conn,
		in:    make(chan element, 64),
		pings: make(chan element, 64),
		done:  make(chan struct{}),
	}
	defer close(fc.done)
	fc.send("<handshake/>" + s.advert)
	notify(s.conns, fc)
	if n == 1 && s.stallFirst.Load() {
		fc.send(`<iq type='get' id='stall' from='alice@example.com/phone' to='cusax.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`)
		<-s.stopped
		return
	}

	for {
		tok, err := d.Token()
		if err != nil {
			return
		}
		switch t := tok.(type) {
		case xml.EndElement: // </stream:stream>
			fc.closed.Store(true)
			fc.send("</stream:stream>")
			return
		case xml.StartElement:
			var e element
			if err := d.DecodeElement(&e, &t); err != nil {
				return
			}
			if e.XMLName.Local == "iq" && e.attr("type") == "get" && bytes.Contains(e.Inner, []byte("urn:xmpp:ping")) {
				if !s.ignorePings.Load() {
					fc.send(fmt.Sprintf(`<iq type='result' id='%s' to='%s' from='%s'/>`, e.attr("id"), e.attr("from"), e.attr("to")))
				}
				notify(fc.pings, e)
				continue
			}
			if s.respond != nil {
				if reply, ok := s.respond(e); ok {
					fc.send(reply)
					continue
				}
			}
			notify(fc.in, e)
		}
	}
}

// notify sends v on ch unless ch is full: the fake server never blocks on a
// test that stopped listening. Buffers are large enough for what tests read.
func notify[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}

// send writes raw XML to the component.
func (fc *fakeConn) send(raw string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_, _ = io.WriteString(fc.conn, raw)
}

// roundTrip sends an IQ and returns the component's answer to it.
func (fc *fakeConn) roundTrip(t *testing.T, iq string) element {
	t.Helper()
	fc.send(iq)
	return recv(t, fc.in, "the component's answer to "+iq)
}

func nextStart(d *xml.Decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if s, ok := tok.(xml.StartElement); ok {
			return s, nil
		}
	}
}

// recv waits for the next value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %s", what, waitLimit)
		panic("unreachable")
	}
}

// waitFor blocks until cond holds, re-checking it at every change of the
// component's state (Up, Privileges).
func waitFor(t *testing.T, c *Component, what string, cond func() bool) {
	t.Helper()
	watchdog := time.After(waitLimit)
	for {
		changed := c.changes()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-watchdog:
			t.Fatalf("component never reached state %q", what)
		}
	}
}

// running is a Component started with Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start runs c until stop is called or the test ends.
func start(t *testing.T, c *Component) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		r.err = recv(t, r.done, "return from Run after cancel")
	})
	return r.err
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// errDialRefused stands for a server that is not listening.
var errDialRefused = errors.New("connect: connection refused")
