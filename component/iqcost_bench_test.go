package component

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// TestIntegrationIQCostProsody measures what one IQ of each kind the sync
// engine sends costs the real Prosody: wall time per IQ with
// CUSAX_BENCH_CONCURRENCY in flight, and Prosody's own CPU time per IQ
// (from /proc, so that other load on the machine does not inflate it). It
// runs with CUSAX_INTEGRATION=1 and CUSAX_BENCH=N (users, e.g. 2000); the
// figures are logged for docs/benchmarks.md, not asserted. Each phase sends
// one IQ per user, in JID order, like a reconcile; CUSAX_BENCH_PHASES=text
// runs only the phases whose names contain text.
func TestIntegrationIQCostProsody(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CUSAX_BENCH"))
	if n <= 0 {
		t.Skip("set CUSAX_BENCH=N (e.g. 2000) with CUSAX_INTEGRATION=1 to measure the Prosody cost of each kind of IQ")
	}
	conc := benchConcurrency()
	if conc == 0 {
		conc = DefaultSyncConcurrency
	}
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: map[string]string{"alice": "alice-pw"}})
	accounts := filepath.Join(x.Dir, "data", "example%2ecom", "accounts")
	seed, err := os.ReadFile(filepath.Join(accounts, "alice.dat"))
	if err != nil {
		t.Fatal(err)
	}
	users := make([]jid.JID, n)
	for i := range n {
		u := fmt.Sprintf("u%05d", i)
		if err := os.WriteFile(filepath.Join(accounts, u+".dat"), seed, 0o600); err != nil {
			t.Fatal(err)
		}
		users[i] = jid.MustParse(u + "@" + x.Domain)
	}

	// A bare component session: no sync engine, only the IQs under test.
	conn, err := net.Dial("tcp", x.ComponentAddr)
	if err != nil {
		t.Fatal(err)
	}
	addr := jid.MustParse(x.Component)
	sess, err := component.NewSession(t.Context(), addr, []byte(x.Secret), conn)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sess.Serve(nil) }()
	t.Cleanup(func() {
		_ = sess.Close()
		<-served
		_ = conn.Close()
	})
	send := sessionSender{sess}
	priv := Privileges{Version: 2, IQ: map[string]string{NSPubSub: "both", NSVCard4: "both", NSVCard: "both"}}
	domain := jid.MustParse(x.Domain)

	vcard := func(i int) *node {
		id := identityFor(i, x.Domain)
		return mergeVCard4(nil, id.Tel, id.SIP, id.Name, VCardEnforce).doc
	}
	reach := func(i int) *node { return reachElement(reachURIs(identityFor(i, x.Domain))) }
	phases := []struct {
		name string
		iq   func(ctx context.Context, i int) error
		// wantErr: the IQ is expected to fail (e.g. item-not-found).
		wantErr bool
	}{
		{"ping to the server (not privileged)", func(ctx context.Context, _ int) error {
			_, err := ownIQ(ctx, send, addr, domain, stanza.GetIQ, elem(ping.NS, "ping"))
			return err
		}, false},
		{"privileged get, reach node missing", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.GetIQ, itemsPayload(NodeReach))
			return err
		}, true},
		{"privileged publish reach, publish-options (creates node)", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.SetIQ, publishPayload(NodeReach, reach(i), DefaultAccessModel))
			return err
		}, false},
		{"privileged get, reach node present", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.GetIQ, itemsPayload(NodeReach))
			return err
		}, false},
		{"privileged publish reach again, publish-options", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.SetIQ, publishPayload(NodeReach, reach(i), DefaultAccessModel))
			return err
		}, false},
		{"privileged publish reach again, no options", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.SetIQ, publishPayload(NodeReach, reach(i), ""))
			return err
		}, false},
		{"privileged get, vCard4 node missing", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.GetIQ, itemsPayload(NodeVCard4))
			return err
		}, true},
		{"privileged publish vCard4, publish-options (creates node)", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.SetIQ, publishPayload(NodeVCard4, vcard(i), DefaultAccessModel))
			return err
		}, false},
		{"privileged get, vCard4 node present", func(ctx context.Context, i int) error {
			_, err := privilegedIQ(ctx, send, priv, addr, users[i], stanza.GetIQ, itemsPayload(NodeVCard4))
			return err
		}, false},
	}
	only := os.Getenv("CUSAX_BENCH_PHASES") // run only the phases whose names contain it
	for _, ph := range phases {
		if only != "" && !strings.Contains(ph.name, only) {
			continue
		}
		cpu0, wait0 := procCPU(t, x.PID)
		begin := time.Now()
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs int
			next = make(chan int)
		)
		for range conc {
			wg.Go(func() {
				for i := range next {
					ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
					err := ph.iq(ctx, i)
					cancel()
					if (err != nil) != ph.wantErr {
						mu.Lock()
						errs++
						if errs == 1 {
							t.Logf("%s: %s: %v", ph.name, users[i], err)
						}
						mu.Unlock()
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		wall := time.Since(begin)
		cpu, wait := procCPU(t, x.PID)
		cpu, wait = cpu-cpu0, wait-wait0
		t.Logf("%-58s %d IQs: %7.3f ms/IQ wall, %6.3f ms/IQ Prosody CPU, Prosody waited for a CPU %4.0f%% of the wall time, %d unexpected",
			ph.name, n, ms(wall)/float64(n), ms(cpu)/float64(n), 100*wait.Seconds()/wall.Seconds(), errs)
	}
}

// identityFor is the identity of generated user i, as the scale benchmark
// builds it.
func identityFor(i int, domain string) identity.Identity {
	u := fmt.Sprintf("u%05d", i)
	return identity.Identity{JID: u + "@" + domain, SIP: []string{"sip:" + u + "@" + domain},
		Tel: []string{fmt.Sprintf("+1555%07d", i)}, Name: u}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// procCPU returns the CPU time of process pid and how long it waited,
// runnable, for a CPU (Linux /proc/PID/schedstat, nanoseconds): on a busy
// machine the wait shows how much of a wall time is other people's load.
func procCPU(t *testing.T, pid int) (cpu, wait time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		t.Fatalf("/proc/%d/schedstat: %q", pid, b)
	}
	run, _ := strconv.ParseInt(f[0], 10, 64)
	delay, _ := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(run), time.Duration(delay)
}
