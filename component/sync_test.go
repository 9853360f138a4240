package component

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/identity"
)

func mustParsePriv(t *testing.T, advert string) Privileges {
	t.Helper()
	if advert == "" {
		return Privileges{}
	}
	p, err := parsePrivilegeBytes([]byte(advert))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// advertIQ is a v2 advert granting the given IQ namespaces.
func advertIQ(perms ...string) string {
	var b strings.Builder
	b.WriteString(`<message to='cusax.example.com' from='example.com'><privilege xmlns='urn:xmpp:privilege:2'><perm access='presence' type='managed_entity'/><perm access='iq'>`)
	for i := 0; i+1 < len(perms); i += 2 {
		fmt.Fprintf(&b, `<namespace ns='%s' type='%s'/>`, perms[i], perms[i+1])
	}
	b.WriteString(`</perm></privilege></message>`)
	return b.String()
}

func TestPlanWrites(t *testing.T) {
	api := "http://127.0.0.1:5280/api"
	for _, tc := range []struct {
		name   string
		advert string
		sync   SyncConfig
		want   string
	}{
		{"prosody", prosodyAdvert, SyncConfig{Reach: true}, "reach=privileged-iq vcard=privileged-iq(vcard4)"},
		{"prosody with api", prosodyAdvert, SyncConfig{Reach: true, EjabberdAPI: api}, "reach=privileged-iq vcard=privileged-iq(vcard4)"},
		{"ejabberd 23.01 with api", ejabberdAdvert, SyncConfig{Reach: true, EjabberdAPI: api}, "reach=ejabberd-api vcard=ejabberd-api(vcard-temp)"},
		{"ejabberd 23.01 without api", ejabberdAdvert, SyncConfig{Reach: true}, "reach=none vcard=none"},
		{"no advert", "", SyncConfig{Reach: true}, "reach=none vcard=none"},
		{"everything off", prosodyAdvert, SyncConfig{Reach: false, VCard: VCardOff}, "reach=off vcard=off"},
		{"pubsub and vcard-temp, no vcard4 (ejabberd >= 24.10)", advertIQ(NSPubSub, "both", NSVCard, "both"), SyncConfig{Reach: true, VCard: VCardFill},
			"reach=privileged-iq vcard=privileged-iq(vcard-temp)"},
		{"pubsub set only", advertIQ(NSPubSub, "set", NSVCard4, "both"), SyncConfig{Reach: true}, "reach=privileged-iq vcard=none"},
		{"vcard-temp get only", advertIQ(NSVCard, "get"), SyncConfig{Reach: true, EjabberdAPI: api}, "reach=ejabberd-api vcard=ejabberd-api(vcard-temp)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PlanWrites(mustParsePriv(t, tc.advert), tc.sync).String(); got != tc.want {
				t.Errorf("PlanWrites() = %s, want %s", got, tc.want)
			}
		})
	}
}

// recordSender records what would be sent and answers with an empty result.
type recordSender struct {
	mu   sync.Mutex
	sent []string
}

func (r *recordSender) sendIQ(_ context.Context, iq stanza.IQ, payload *node) (*node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, string(iq.Type)+" "+payload.String())
	return elem("", "iq").withAttr("type", "result"), nil
}

func TestPrivilegedIQNeverUngranted(t *testing.T) {
	from, user := jid.MustParse("cusax.example.com"), jid.MustParse("alice@example.com")
	for _, tc := range []struct {
		advert  string
		typ     stanza.IQType
		payload *node
	}{
		{ejabberdAdvert, stanza.GetIQ, itemsPayload(NodeReach)},
		{"", stanza.SetIQ, elem(NSVCard, "vCard")},
		{advertIQ(NSPubSub, "set"), stanza.GetIQ, itemsPayload(NodeReach)},
		{advertIQ(NSPubSub, "get"), stanza.SetIQ, publishPayload(NodeReach, reachElement(nil), "")},
		{advertIQ(NSVCard4, "both"), stanza.SetIQ, elem(NSVCard, "vCard")},
	} {
		rs := &recordSender{}
		_, err := privilegedIQ(t.Context(), rs, mustParsePriv(t, tc.advert), from, user, tc.typ, tc.payload)
		if !errors.Is(err, ErrNotGranted) || len(rs.sent) != 0 {
			t.Errorf("privilegedIQ(%s %s) under %q = %v, sent %q; want ErrNotGranted, nothing sent", tc.typ, tc.payload.Name.Space, tc.advert, err, rs.sent)
		}
	}
}

func TestPrivilegedIQGolden(t *testing.T) {
	rs := &recordSender{}
	p := mustParsePriv(t, prosodyAdvert)
	_, _ = privilegedIQ(t.Context(), rs, p, jid.MustParse("cusax.example.com"), jid.MustParse("alice@example.com"), stanza.SetIQ,
		publishPayload(NodeReach, reachElement([]string{"sip:alice@example.com", "tel:+15551230001"}), "presence"))
	if len(rs.sent) != 1 {
		t.Fatalf("sent %q", rs.sent)
	}
	// The inner id is random: blank it.
	got := rs.sent[0]
	if i := strings.Index(got, "id='"); i >= 0 {
		got = got[:i+4] + "ID" + got[i+4+16:]
	}
	golden(t, "stanza/privileged-publish.golden", got+"\n")
}

// fakePEP answers the component's privileged IQs like Prosody 0.12: one
// item 'current' per user and node, vcard-temp, item-not-found for a
// missing node, and the stray "300" that breaks the stream for an IQ the
// advert did not grant. It records every privileged IQ as "type ns", and a
// publish with publish-options as "set ns options".
type fakePEP struct {
	priv Privileges

	mu        sync.Mutex
	items     map[string]string // user|node -> payload XML
	vcardTemp map[string]string
	seen      []string
	writes    int
}

func newFakePEP(t *testing.T, advert string) *fakePEP {
	return &fakePEP{priv: mustParsePriv(t, advert), items: map[string]string{}, vcardTemp: map[string]string{}}
}

func (f *fakePEP) respond(e element) (string, bool) {
	if e.XMLName.Local != "iq" || !strings.Contains(string(e.Inner), NSPrivilege2) {
		return "", false
	}
	var raw strings.Builder
	raw.WriteString("<iq>")
	raw.Write(e.Inner)
	raw.WriteString("</iq>")
	outer, err := parseTreeString(raw.String())
	if err != nil {
		return "", false
	}
	inner := outer.child(NSPrivilege2, "privileged_iq").child(nsClient, "iq")
	payload := inner.elements()[0]
	typ, user := e.attr("type"), e.attr("to")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, typ+" "+payload.Name.Space)
	if !f.priv.CanIQ(payload.Name.Space, typ) {
		return `<iq type='error' id='` + e.attr("id") + `'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>300`, true
	}
	reply := func(innerType, body string) string {
		return fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='%s'><privilege xmlns='urn:xmpp:privilege:2'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns='jabber:client' type='%s' id='%s' from='%s' to='%s'>%s</iq></forwarded></privilege></iq>`,
			e.attr("id"), user, e.attr("from"), innerType, inner.attr("id"), user, user, body)
	}
	notFound := `<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`
	switch {
	case payload.Name.Space == NSPubSub && typ == "get":
		node := payload.child(NSPubSub, "items").attr("node")
		item, ok := f.items[user+"|"+node]
		if !ok {
			return reply("error", notFound), true
		}
		return reply("result", fmt.Sprintf(`<pubsub xmlns='%s'><items node='%s'><item id='current'>%s</item></items></pubsub>`, NSPubSub, node, item)), true
	case payload.Name.Space == NSPubSub && typ == "set":
		pub := payload.child(NSPubSub, "publish")
		if payload.child(NSPubSub, "publish-options") != nil {
			f.seen[len(f.seen)-1] += " options"
		}
		f.items[user+"|"+pub.attr("node")] = pub.child(NSPubSub, "item").elements()[0].String()
		f.writes++
		return reply("result", ""), true
	case payload.Name.Space == NSVCard && typ == "get":
		v, ok := f.vcardTemp[user]
		if !ok {
			v = `<vCard xmlns='vcard-temp'/>`
		}
		return reply("result", v), true
	case payload.Name.Space == NSVCard && typ == "set":
		f.vcardTemp[user] = payload.String()
		f.writes++
		return reply("result", ""), true
	}
	return reply("error", notFound), true
}

func (f *fakePEP) item(user, node string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.items[user+"|"+node]
}

func (f *fakePEP) stats() (seen []string, writes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seen), f.writes
}

// waitCount waits until cusax_sync_total{kind,result} reaches n.
func waitCount(t *testing.T, c *Component, kind, result string, n float64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for syncCount(c, kind, result) < n {
		if time.Now().After(deadline) {
			t.Fatalf("cusax_sync_total{kind=%q,result=%q} = %g, want >= %g", kind, result, syncCount(c, kind, result), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newSyncTest(t *testing.T, advert string, sc SyncConfig, ids ...identity.Identity) (*fakeServer, *fakePEP, *Component, *identity.MemoryStore) {
	t.Helper()
	srv := newFakeServer(testSecret, advert)
	pep := newFakePEP(t, advert)
	srv.respond = pep.respond
	store := identity.NewMemoryStore()
	t.Cleanup(func() { _ = store.Close() })
	for _, id := range ids {
		if _, err := store.Put(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(srv.listen(t))
	cfg.AdvertTimeout = 50 * time.Millisecond
	cfg.Identities = store
	cfg.Sync = sc
	c, _, _ := newTest(t, cfg)
	return srv, pep, c, store
}

var aliceID = identity.Identity{JID: "alice@example.com", SIP: []string{"sip:alice@example.com"}, Tel: []string{"+15551230001"}, Name: "Alice"}

func TestSyncProsodyFake(t *testing.T) {
	srv, pep, c, store := newSyncTest(t, prosodyAdvert, SyncConfig{Reach: true, Interval: time.Hour}, aliceID)
	start(t, c)
	waitCount(t, c, KindReach, ResultOK, 1)
	waitCount(t, c, KindVCard, ResultOK, 1)
	if got, want := pep.item("alice@example.com", NodeReach), `<reach xmlns='urn:xmpp:reach:0'><addr uri='sip:alice@example.com'/><addr uri='tel:+15551230001'/></reach>`; got != want {
		t.Errorf("reach item = %s, want %s", got, want)
	}
	if got, want := pep.item("alice@example.com", NodeVCard4), `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice</text></fn><tel><parameters><type><text>voice</text></type></parameters><uri>tel:+15551230001</uri></tel><impp><uri>sip:alice@example.com</uri></impp></vcard>`; got != want {
		t.Errorf("vcard4 item = %s, want %s", got, want)
	}

	// Her presence (one stanza with three children: one re-check) finds
	// nothing to write.
	fc := recv(t, srv.conns, "the stream")
	_, writes := pep.stats()
	fc.send(`<presence from='alice@example.com/phone' to='cusax.example.com'><show>chat</show><status>hi</status><priority>5</priority></presence>`)
	fc.send(`<presence from='mallory@evil.example/x' to='cusax.example.com'/>`)
	waitCount(t, c, KindReach, ResultUnchanged, 1)
	waitCount(t, c, KindVCard, ResultUnchanged, 1)
	barrier(t, fc)
	if _, w := pep.stats(); w != writes {
		t.Errorf("re-check wrote %d times, want none", w-writes)
	}

	// Delete: empty reach, numbers and AOR removed, name kept (enforce).
	if err := store.Delete(t.Context(), "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	waitCount(t, c, KindReach, ResultOK, 2)
	waitCount(t, c, KindVCard, ResultOK, 2)
	if got, want := pep.item("alice@example.com", NodeReach), `<reach xmlns='urn:xmpp:reach:0'/>`; got != want {
		t.Errorf("reach after delete = %s, want %s", got, want)
	}
	if got, want := pep.item("alice@example.com", NodeVCard4), `<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice</text></fn></vcard>`; got != want {
		t.Errorf("vcard4 after delete = %s, want %s", got, want)
	}
	if n := syncCount(c, KindReach, ResultUnchanged); n != 1 {
		t.Errorf("unchanged = %g, want 1 (presence deduplicated)", n)
	}
}

// TestSyncIQSequence pins the privileged IQs of one user: a new user costs
// three (the vCard4 read and write, then the reach node published without a
// read), an unchanged one two reads, a changed one three again, and a change
// of the reach node alone (the order of preference) a read of each node and
// a write of the reach node without publish-options (the node exists: its
// owner's configuration is kept).
func TestSyncIQSequence(t *testing.T) {
	_, pep, c, store := newSyncTest(t, prosodyAdvert, SyncConfig{Reach: true, Interval: time.Hour}, aliceID)
	r := start(t, c)
	t.Cleanup(func() { _ = r.stop(t) })
	get, set, setOpts := "get "+NSPubSub, "set "+NSPubSub, "set "+NSPubSub+" options"
	check := func(what string, want ...string) {
		t.Helper()
		if seen, _ := pep.stats(); !slices.Equal(seen, want) {
			t.Errorf("%s: sent %q, want %q", what, seen, want)
		}
	}
	waitCount(t, c, KindReach, ResultOK, 1)
	want := []string{get, setOpts, setOpts}
	check("new user", want...)

	// A reconnect reconciles again: two reads, nothing written.
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	r = start(t, c)
	waitCount(t, c, KindReach, ResultUnchanged, 1)
	want = append(want, get, get)
	check("unchanged user", want...)

	// A second AOR: the vCard is rewritten, so is the reach node, unread.
	two := aliceID
	two.SIP = []string{"sip:alice@example.com", "sip:alice@pbx.example.com"}
	if _, err := store.Put(t.Context(), two); err != nil {
		t.Fatal(err)
	}
	waitCount(t, c, KindReach, ResultOK, 2)
	want = append(want, get, set, setOpts)
	check("changed user", want...)

	// The same AORs in another order: only the reach node changes.
	two.SIP = []string{"sip:alice@pbx.example.com", "sip:alice@example.com"}
	if _, err := store.Put(t.Context(), two); err != nil {
		t.Fatal(err)
	}
	waitCount(t, c, KindReach, ResultOK, 3)
	want = append(want, get, get, set)
	check("reordered AORs", want...)
}

func TestSyncNeverSendsUngranted(t *testing.T) {
	for _, tc := range []struct {
		name, advert string
		sync         SyncConfig
		skipped      map[string]bool // kinds counted as skipped
	}{
		{"ejabberd without api", ejabberdAdvert, SyncConfig{Reach: true}, map[string]bool{KindReach: true, KindVCard: true}},
		{"pubsub set only", advertIQ(NSPubSub, "set", NSVCard4, "both"), SyncConfig{Reach: true}, map[string]bool{KindVCard: true}},
		{"vcard-temp only", advertIQ(NSVCard, "both"), SyncConfig{Reach: true, VCard: VCardFill}, map[string]bool{KindReach: true}},
		{"no advert", "", SyncConfig{Reach: true}, map[string]bool{KindReach: true, KindVCard: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, pep, c, _ := newSyncTest(t, tc.advert, tc.sync, aliceID)
			r := start(t, c)
			for _, kind := range []string{KindReach, KindVCard} {
				res := ResultOK
				if tc.skipped[kind] {
					res = ResultSkipped
				}
				waitCount(t, c, kind, res, 1)
			}
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			seen, _ := pep.stats()
			p := mustParsePriv(t, tc.advert)
			for _, s := range seen {
				typ, ns, _ := strings.Cut(s, " ")
				ns, _, _ = strings.Cut(ns, " ") // without " options"
				if !p.CanIQ(ns, typ) {
					t.Errorf("sent an ungranted privileged IQ: %s", s)
				}
			}
			if n := syncCount(c, KindReach, ResultError) + syncCount(c, KindVCard, ResultError); n != 0 {
				t.Errorf("%g errors", n)
			}
		})
	}
}

func TestSyncQueue(t *testing.T) {
	q := newSyncQueue(2)
	q.push(syncJob{jid: "a"})
	q.push(syncJob{jid: "b"})
	q.push(syncJob{jid: "a", deleted: true}) // replaces the pending one
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	j1, _ := q.take(ctx)
	if j1.jid != "a" || !j1.deleted {
		t.Fatalf("take() = %+v, want the newest job of a", j1)
	}
	q.push(syncJob{jid: "a"}) // a is busy: b goes first
	j2, _ := q.take(ctx)
	if j2.jid != "b" {
		t.Fatalf("take() = %+v, want b while a is busy", j2)
	}
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	if j, ok := q.take(short); ok {
		t.Fatalf("take() = %+v while the only pending JID is busy", j)
	}
	stop()
	q.done("a")
	if j3, ok := q.take(ctx); !ok || j3.jid != "a" {
		t.Fatalf("take() = %+v, %v after done", j3, ok)
	}
	q.done("a")
	q.done("b")
	if !q.idle() {
		t.Error("queue not idle")
	}
	// pushWait blocks while full.
	q.push(syncJob{jid: "x"})
	q.push(syncJob{jid: "y"})
	full, stop2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop2()
	if err := q.pushWait(full, syncJob{jid: "z"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("pushWait on a full queue = %v", err)
	}
}

func TestSyncConfigValidate(t *testing.T) {
	cfg := testConfig("127.0.0.1:5347")
	cfg.Sync = SyncConfig{VCard: "sometimes", AccessModel: "everyone", EjabberdAPI: "ftp://x"}
	_, err := New(cfg, nil, nil)
	for _, want := range []string{"Sync.VCard", "Sync.AccessModel", "Sync.EjabberdAPI"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New() error = %v, want it to name %s", err, want)
		}
	}
}

// fakeEjabberd is ejabberd 23.01's loopback API (send_stanza) and its
// public vcard-temp, as the component sees them.
type fakeEjabberd struct {
	mu     sync.Mutex
	vcards map[string]string // user -> <vCard/>
	reach  map[string]string // user -> <reach/>
	calls  int
}

func (f *fakeEjabberd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct{ From, To, Stanza string }
	if r.URL.Path != "/api/send_stanza" || json.NewDecoder(r.Body).Decode(&req) != nil || req.From != req.To {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	iq, err := parseTreeString(req.Stanza)
	if err != nil || iq.attr("type") != "set" {
		http.Error(w, "bad stanza", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	switch p := iq.elements()[0]; p.Name.Space {
	case NSVCard:
		f.vcards[req.From] = p.String()
	case NSPubSub:
		f.reach[req.From] = p.child(NSPubSub, "publish").child(NSPubSub, "item").elements()[0].String()
	}
	_, _ = io.WriteString(w, "0")
}

// respond answers the component's own vcard-temp gets.
func (f *fakeEjabberd) respond(e element) (string, bool) {
	if e.XMLName.Local != "iq" || e.attr("type") != "get" || !strings.Contains(string(e.Inner), "vcard-temp") {
		return "", false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vcards[e.attr("to")]
	if !ok {
		v = `<vCard xmlns='vcard-temp'/>`
	}
	return fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='%s'>%s</iq>`, e.attr("id"), e.attr("to"), e.attr("from"), v), true
}

func TestSyncEjabberdAPIFake(t *testing.T) {
	f := &fakeEjabberd{vcards: map[string]string{
		"alice@example.com": `<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><PHOTO><BINVAL>` + tinyPNG + `</BINVAL></PHOTO></vCard>`,
	}, reach: map[string]string{}}
	api := httptest.NewServer(f)
	defer api.Close()
	srv := newFakeServer(testSecret, ejabberdAdvert)
	srv.respond = f.respond
	store := identity.NewMemoryStore()
	defer store.Close()
	if _, err := store.Put(t.Context(), aliceID); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv.listen(t))
	cfg.Identities = store
	cfg.Sync = SyncConfig{Reach: true, Interval: time.Hour, EjabberdAPI: api.URL + "/api"}
	c, _, _ := newTest(t, cfg)
	r := start(t, c)
	waitCount(t, c, KindReach, ResultOK, 1)
	waitCount(t, c, KindVCard, ResultOK, 1)
	f.mu.Lock()
	gotV, gotR := f.vcards["alice@example.com"], f.reach["alice@example.com"]
	f.mu.Unlock()
	if want := `<vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><PHOTO><BINVAL>` + tinyPNG + `</BINVAL></PHOTO><TEL><WORK/><VOICE/><NUMBER>+15551230001</NUMBER></TEL></vCard>`; gotV != want {
		t.Errorf("vcard-temp = %s, want %s", gotV, want)
	}
	if want := `<reach xmlns='urn:xmpp:reach:0'><addr uri='sip:alice@example.com'/><addr uri='tel:+15551230001'/></reach>`; gotR != want {
		t.Errorf("reach = %s, want %s", gotR, want)
	}
	// The same identity again (presence): nothing is written.
	fc := recv(t, srv.conns, "the stream")
	fc.send(`<presence from='alice@example.com/pc' to='cusax.example.com'/>`)
	waitCount(t, c, KindReach, ResultUnchanged, 1)
	waitCount(t, c, KindVCard, ResultUnchanged, 1)
	f.mu.Lock()
	calls := f.calls
	f.mu.Unlock()
	if calls != 2 {
		t.Errorf("%d send_stanza calls, want 2", calls)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// flakyWatch fails the first Watch, then delegates to the store.
type flakyWatch struct {
	*identity.MemoryStore
	mu    sync.Mutex
	fails int
}

func (f *flakyWatch) Watch(ctx context.Context, from uint64) (<-chan identity.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails > 0 {
		f.fails--
		return nil, identity.ErrUnavailable
	}
	return f.MemoryStore.Watch(ctx, from)
}

func TestSyncWatchRetry(t *testing.T) {
	srv := newFakeServer(testSecret, prosodyAdvert)
	pep := newFakePEP(t, prosodyAdvert)
	srv.respond = pep.respond
	store := identity.NewMemoryStore()
	defer store.Close()
	if _, err := store.Put(t.Context(), aliceID); err != nil {
		t.Fatal(err)
	}
	ids := &flakyWatch{MemoryStore: store, fails: 1}
	cfg := testConfig(srv.listen(t))
	cfg.Identities = ids
	cfg.Sync = SyncConfig{Reach: true, VCard: VCardOff, Interval: time.Hour}
	c, _, logs := newTest(t, cfg)
	c.watchRetry = 10 * time.Millisecond
	r := start(t, c)
	waitCount(t, c, KindReach, ResultOK, 1)

	// After the retry the feed works: a change is published.
	bob := identity.Identity{JID: "bob@example.com", Tel: []string{"+15551230002"}}
	for pep.item("bob@example.com", NodeReach) == "" {
		if _, err := store.Put(t.Context(), bob); err != nil {
			t.Fatal(err)
		}
		waitCount(t, c, KindReach, ResultOK, 2)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="component sync watch failed"`) {
		t.Errorf("no watch failure logged:\n%s", logs)
	}
}

func TestProbeEjabberdAPI(t *testing.T) {
	for status, wantErr := range map[int]string{
		http.StatusBadRequest:          "",
		http.StatusForbidden:           "not permitted",
		http.StatusUnauthorized:        "not permitted",
		http.StatusNotFound:            "no such endpoint",
		http.StatusInternalServerError: "unexpected answer",
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/send_stanza" || r.Method != http.MethodPost {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
		}))
		hc := &http.Client{Transport: &http.Transport{}}
		err := ProbeEjabberdAPI(t.Context(), srv.URL+"/api/", hc)
		if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
			t.Errorf("status %d: ProbeEjabberdAPI() = %v, want %q", status, err, wantErr)
		}
		hc.CloseIdleConnections()
		srv.Close()
	}
}

func TestSyncPeriodicReconcile(t *testing.T) {
	var ids []identity.Identity
	for i := range 10 {
		ids = append(ids, identity.Identity{JID: fmt.Sprintf("u%d@example.com", i), Tel: []string{fmt.Sprintf("+1555000%04d", i)}})
	}
	_, pep, c, _ := newSyncTest(t, prosodyAdvert, SyncConfig{Reach: true, VCard: VCardOff, Interval: 100 * time.Millisecond}, ids...)
	r := start(t, c)
	waitCount(t, c, KindReach, ResultOK, 10)
	_, writes := pep.stats()
	// Two periodic reconciles later, every identity was found unchanged
	// twice and nothing was written again.
	waitCount(t, c, KindReach, ResultUnchanged, 20)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, w := pep.stats(); w != writes {
		t.Errorf("periodic reconciles wrote %d times, want 0", w-writes)
	}
}
