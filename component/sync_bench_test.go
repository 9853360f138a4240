package component

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

// TestIntegrationSyncScaleProsody measures a full reconcile of many
// identities against the real Prosody and the change-to-visible latency a
// subscribed contact sees. It runs with CUSAX_INTEGRATION=1 and
// CUSAX_BENCH=N (the number of identities, e.g. 10000); the figures are
// logged for docs/benchmarks.md, not asserted. Prosody's own CPU time is
// logged too: it does not grow when other work shares the machine.
func TestIntegrationSyncScaleProsody(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CUSAX_BENCH"))
	if n <= 0 {
		t.Skip("set CUSAX_BENCH=N (e.g. 10000) with CUSAX_INTEGRATION=1 to measure a full reconcile of N identities")
	}
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw"}
	x := testenv.StartProsody(t, testenv.ProsodyOptions{Privileged: true, Users: users})
	alice, bob := "alice@"+x.Domain, "bob@"+x.Domain

	// Accounts: mod_privilege only serves users that exist. Copy alice's
	// account file (internal_hashed storage) for every generated user.
	accounts := filepath.Join(x.Dir, "data", "example%2ecom", "accounts")
	seed, err := os.ReadFile(filepath.Join(accounts, "alice.dat"))
	if err != nil {
		t.Fatal(err)
	}
	store := identity.NewMemoryStore()
	t.Cleanup(func() { _ = store.Close() })
	var ids []identity.Identity
	for i := range n {
		u := fmt.Sprintf("u%05d", i)
		if err := os.WriteFile(filepath.Join(accounts, u+".dat"), seed, 0o600); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, identity.Identity{JID: u + "@" + x.Domain, SIP: []string{"sip:" + u + "@" + x.Domain},
			Tel: []string{fmt.Sprintf("+1555%07d", i)}, Name: u})
	}
	if err := store.Import(t.Context(), ids); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Put(t.Context(), identity.Identity{JID: alice, SIP: []string{"sip:alice@" + x.Domain}, Tel: []string{"+15559990000"}}); err != nil {
		t.Fatal(err)
	}
	total := float64(n + 1)

	cfg := Config{
		JID: x.Component, Server: x.ComponentAddr, Secret: Secret(x.Secret), Domain: x.Domain,
		Identities: store, Sync: SyncConfig{Reach: true, VCard: VCardEnforce, Interval: time.Hour, Concurrency: benchConcurrency()},
	}
	c, _, logs := newTest(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("component log (tail):\n%s", tailString(logs.String(), 4000))
		}
	})
	cpu0, wait0 := procCPU(t, x.PID)
	self0 := selfCPU(t)
	begin := time.Now()
	r := start(t, c)
	done := func(kind string) float64 {
		return syncCount(c, kind, ResultOK) + syncCount(c, kind, ResultUnchanged) + syncCount(c, kind, ResultError)
	}
	for done(KindReach) < total || done(KindVCard) < total {
		if time.Since(begin) > 30*time.Minute {
			t.Fatalf("after 30 min: reach %g, vcard %g of %g", done(KindReach), done(KindVCard), total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	full := time.Since(begin)
	cpu, wait := procCPU(t, x.PID)
	cpu, wait = cpu-cpu0, wait-wait0
	self := selfCPU(t) - self0
	t.Logf("cusax-gw (the test process, all threads) CPU during the first reconcile: %s (%.2f ms/identity)", self.Round(10*time.Millisecond), ms(self)/total)
	t.Logf("full reconcile of %d identities (reach + vCard4, first write): %s (%.0f identities/s); errors reach=%g vcard=%g; Prosody CPU %s (%.2f ms/identity, %.0f%% of the wall time), waiting for a CPU %.0f%%",
		n+1, full.Round(time.Millisecond), total/full.Seconds(), syncCount(c, KindReach, ResultError), syncCount(c, KindVCard, ResultError),
		cpu.Round(10*time.Millisecond), ms(cpu)/total, 100*cpu.Seconds()/full.Seconds(), 100*wait.Seconds()/full.Seconds())

	// A reconnect reconciles again and finds everything unchanged: the
	// steady state of every sync.interval (reads only).
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	base := syncCount(c, KindReach, ResultUnchanged) + syncCount(c, KindVCard, ResultUnchanged)
	cpu0, wait0 = procCPU(t, x.PID)
	begin = time.Now()
	r = start(t, c)
	for syncCount(c, KindReach, ResultUnchanged)+syncCount(c, KindVCard, ResultUnchanged) < base+2*total {
		if time.Since(begin) > 30*time.Minute {
			t.Fatalf("second reconcile not done after 30 min")
		}
		time.Sleep(50 * time.Millisecond)
	}
	again := time.Since(begin)
	cpu, wait = procCPU(t, x.PID)
	cpu, wait = cpu-cpu0, wait-wait0
	t.Logf("second full reconcile of %d identities (all unchanged, reads only): %s (%.0f identities/s); Prosody CPU %s (%.2f ms/identity, %.0f%% of the wall time), waiting for a CPU %.0f%%",
		n+1, again.Round(time.Millisecond), total/again.Seconds(), cpu.Round(10*time.Millisecond), ms(cpu)/total, 100*cpu.Seconds()/again.Seconds(), 100*wait.Seconds()/again.Seconds())

	// Change-to-visible latency seen by a subscribed contact.
	ac := dialClient(t, x.C2SAddr, alice, users["alice"])
	bc := dialClient(t, x.C2SAddr, bob, users["bob"])
	bc.presence(t, "subscribe", alice)
	ac.presence(t, "subscribed", bob)
	var lat []time.Duration
	for i := range 50 {
		tel := fmt.Sprintf("+1555888%04d", i)
		if _, err := store.Put(t.Context(), identity.Identity{JID: alice, SIP: []string{"sip:alice@" + x.Domain}, Tel: []string{tel}}); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, eventually(t, "bob sees the change", wantReach(t, bc, alice, "sip:alice@"+x.Domain, "tel:"+tel)))
	}
	slices.Sort(lat)
	t.Logf("change-to-visible latency over %d changes (contact polls every 20 ms): p50 %s p90 %s p99 %s max %s",
		len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*9/10].Round(time.Millisecond),
		lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if err := r.stop(t); err != nil {
		t.Error(err)
	}
}

// selfCPU returns the user+system CPU time of this process, all threads.
func selfCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// benchConcurrency is CUSAX_BENCH_CONCURRENCY, default the package default.
func benchConcurrency() int {
	n, _ := strconv.Atoi(os.Getenv("CUSAX_BENCH_CONCURRENCY"))
	return n
}
