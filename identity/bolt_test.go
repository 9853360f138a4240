package identity_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
	"github.com/cusax-gw/cusax-gw/identity/storetest"
)

func openBolt(t testing.TB, path string, opts identity.BoltOptions) *identity.BoltStore {
	t.Helper()
	s, err := identity.OpenBolt(path, opts)
	if err != nil {
		t.Fatalf("OpenBolt(%s) = %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestBoltStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) identity.Store {
		return openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{})
	})
}

func TestBoltTombstoneExpiry(t *testing.T) {
	storetest.RunTombstoneExpiry(t, func(t *testing.T, maxAge time.Duration, now func() time.Time) identity.Store {
		return openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{TombstoneMaxAge: maxAge, Now: now, NoSync: true})
	})
}

// The suite again with a tiny log and watch buffer: watchers catch up from
// the log or resync, and must still end with the store's content.
func TestBoltStoreSmallLog(t *testing.T) {
	storetest.Run(t, func(t *testing.T) identity.Store {
		return openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{LogSize: 3, WatchBuffer: 1, NoSync: true})
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBoltFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "deeper")
	path := filepath.Join(dir, "identity.db")
	openBolt(t, path, identity.BoltOptions{})
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Dir(dir): 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.db")
	openBolt(t, path, identity.BoltOptions{})
	s, err := identity.OpenBolt(path, identity.BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("second OpenBolt of the same file succeeded")
	}
	want := "identity: store file " + path + " is locked by another process"
	if err.Error() != want {
		t.Errorf("second OpenBolt = %q, want %q", err, want)
	}
}

func TestBoltOpenErrors(t *testing.T) {
	if _, err := identity.OpenBolt("", identity.BoltOptions{}); err == nil {
		t.Error("OpenBolt(\"\") succeeded")
	}
	// A path below a regular file.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := identity.OpenBolt(filepath.Join(file, "identity.db"), identity.BoltOptions{}); err == nil {
		s.Close()
		t.Error("OpenBolt below a file succeeded")
	}
	// Not a bbolt file.
	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := identity.OpenBolt(junk, identity.BoltOptions{}); err == nil {
		s.Close()
		t.Error("OpenBolt of a junk file succeeded")
	} else if !strings.Contains(err.Error(), junk) {
		t.Errorf("OpenBolt(junk) = %v, want the path in the error", err)
	}
	// Written by a newer version.
	path := filepath.Join(t.TempDir(), "new.db")
	s, err := identity.OpenBolt(path, identity.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.SetBoltSchema(s, 99); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := identity.OpenBolt(path, identity.BoltOptions{}); err == nil {
		s.Close()
		t.Error("OpenBolt of a newer schema succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("OpenBolt(newer schema) = %v", err)
	}
}

func person(i int) identity.Identity {
	return identity.Identity{
		JID:  fmt.Sprintf("user%06d@example.com", i),
		SIP:  []string{fmt.Sprintf("sip:user%06d@example.com", i)},
		Tel:  []string{fmt.Sprintf("+1555%07d", i)},
		Name: fmt.Sprintf("User %d", i),
	}
}

func people(n int) []identity.Identity {
	ids := make([]identity.Identity, n)
	for i := range ids {
		ids[i] = person(i)
	}
	return ids
}

// A restart loses nothing, and the log replays Watch across it.
func TestBoltReopen(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "identity.db")
	s, err := identity.OpenBolt(path, identity.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, people(100)); err != nil {
		t.Fatal(err)
	}
	p := person(1)
	p.Tel = append(p.Tel, "+15551230001")
	if _, err := s.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, person(2).JID); err != nil {
		t.Fatal(err)
	}
	rev, _ := s.Rev(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openBolt(t, path, identity.BoltOptions{})
	if got, _ := s.Rev(ctx); got != rev {
		t.Errorf("Rev after reopen = %d, want %d", got, rev)
	}
	if n, _ := s.Count(ctx); n != 99 {
		t.Errorf("Count after reopen = %d, want 99", n)
	}
	got, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: "+15551230001"})
	if err != nil || !got.Equal(p) || got.Version != rev-1 {
		t.Errorf("Lookup after reopen = %+v, %v, want %+v at %d", got, err, p, rev-1)
	}
	if _, err := s.Get(ctx, person(2).JID); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("deleted identity after reopen: %v", err)
	}
	ch, err := s.Watch(ctx, rev-2)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []identity.Event{{Op: identity.OpPut, Rev: rev - 1, JID: p.JID}, {Op: identity.OpDelete, Rev: rev, JID: person(2).JID}} {
		ev := recv(t, ch)
		if ev.Op != want.Op || ev.Rev != want.Rev || ev.JID != want.JID {
			t.Errorf("replayed %v %d %s, want %v %d %s", ev.Op, ev.Rev, ev.JID, want.Op, want.Rev, want.JID)
		}
	}
	if err := identity.CheckBolt(s); err != nil {
		t.Errorf("bbolt check: %v", err)
	}
}

func recv(t *testing.T, ch <-chan identity.Event) identity.Event {
	t.Helper()
	timer := time.NewTimer(storetest.Guard)
	defer timer.Stop()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-timer.C:
		t.Fatalf("no event within %v", storetest.Guard)
	}
	return identity.Event{}
}

// A watcher that does not read while many writes happen catches up from
// the log when it still reaches back, and gets OpResync when not.
func TestBoltSlowWatcher(t *testing.T) {
	for _, tt := range []struct {
		logSize int
		resync  bool
	}{{100, false}, {10, true}} {
		t.Run(fmt.Sprintf("log%d", tt.logSize), func(t *testing.T) {
			ctx := testCtx(t)
			s := openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{LogSize: tt.logSize, WatchBuffer: 2, NoSync: true})
			ch, err := s.Watch(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 50 {
				if _, err := s.Create(ctx, person(i)); err != nil {
					t.Fatal(err)
				}
			}
			// Revisions increase by one, except across an OpResync.
			resyncs := 0
			var last uint64
			for last < 50 {
				ev := recv(t, ch)
				switch {
				case ev.Op == identity.OpResync && ev.Rev > last:
					resyncs++
				case ev.Op == identity.OpPut && ev.Rev == last+1 && ev.JID == person(int(last)).JID:
				default:
					t.Fatalf("after rev %d: event %v %d %s", last, ev.Op, ev.Rev, ev.JID)
				}
				last = ev.Rev
			}
			if tt.resync != (resyncs > 0) {
				t.Errorf("%d resyncs with a log of %d, want resync %v", resyncs, tt.logSize, tt.resync)
			}
		})
	}
}

// An Import larger than the log gives watchers OpResync, after which they
// continue with later changes.
func TestBoltImportLargerThanLog(t *testing.T) {
	ctx := testCtx(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{LogSize: 100})
	if _, err := s.Create(ctx, identity.Identity{JID: "first@example.com"}); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, people(5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, identity.Identity{JID: "last@example.com"}); err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	if ev.Op != identity.OpResync || ev.Rev < 5001 {
		t.Fatalf("first event after a 5000-identity Import = %v %d, want OpResync at >= 5001", ev.Op, ev.Rev)
	}
	for ev.Rev < 5002 {
		ev = recv(t, ch)
	}
	if ev.Op != identity.OpPut || ev.JID != "last@example.com" {
		t.Errorf("last event = %v %s, want put of last@example.com", ev.Op, ev.JID)
	}
	// A watcher from before the Import, started later, resyncs too.
	ch2, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, ch2); ev.Op != identity.OpResync || ev.Rev != 5002 {
		t.Errorf("late watcher = %v %d, want OpResync 5002", ev.Op, ev.Rev)
	}
	// One within the log replays.
	ch3, err := s.Watch(ctx, 4990)
	if err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, ch3); ev.Op != identity.OpPut || ev.Rev != 4991 || ev.JID != person(4989).JID {
		t.Errorf("watcher within the log = %v %d %s, want put 4991 %s", ev.Op, ev.Rev, ev.JID, person(4989).JID)
	}
}

func TestBoltImportCancelled(t *testing.T) {
	ctx := testCtx(t)
	s := openBolt(t, filepath.Join(t.TempDir(), "identity.db"), identity.BoltOptions{NoSync: true})
	cctx, cancel := context.WithCancel(ctx)
	identity.SetBoltHook(s, func(stage string) {
		if stage == "import:checked" {
			cancel()
		}
	})
	if err := s.Import(cctx, people(10000)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Import with ctx cancelled mid-way = %v, want context.Canceled", err)
	}
	if n, _ := s.Count(ctx); n != 0 {
		t.Errorf("Count after a cancelled Import = %d, want 0", n)
	}
	if rev, _ := s.Rev(ctx); rev != 0 {
		t.Errorf("Rev after a cancelled Import = %d, want 0", rev)
	}
}

const (
	crashEnv  = "CUSAX_BOLT_CRASH_HELPER" // mode: block|run
	crashPath = "CUSAX_BOLT_CRASH_PATH"
	crashN    = 10000
)

// TestBoltCrashHelper is the child process of TestBoltCrashMidImport.
func TestBoltCrashHelper(t *testing.T) {
	mode := os.Getenv(crashEnv)
	if mode == "" {
		t.Skip("helper process for TestBoltCrashMidImport")
	}
	s, err := identity.OpenBolt(os.Getenv(crashPath), identity.BoltOptions{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	identity.SetBoltHook(s, func(stage string) {
		if stage == "import:checked" {
			fmt.Println("started")
			if mode == "block" {
				select {} // killed here, inside the transaction
			}
		}
	})
	if err := s.Import(context.Background(), people(crashN)); err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	fmt.Println("done")
	select {} // killed after the commit, without Close
}

// TestBoltCrashMidImport kills (SIGKILL) a process importing 10,000
// identities at several points and checks that the file then holds all of
// them or none, is consistent, and opens.
func TestBoltCrashMidImport(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: runs child processes")
	}
	type run struct {
		name, mode string
		after      time.Duration // kill this long after "started"; <0: after "done"
	}
	runs := []run{{"inside_tx", "block", 0}, {"after_commit", "run", -1}, {"at_start", "run", 0}}
	// Spread kills over the import's duration, measured by the "done" run.
	var took time.Duration
	for i := 0; i < len(runs); i++ {
		r := runs[i]
		t.Run(r.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "identity.db")
			pre := openBolt(t, path, identity.BoltOptions{})
			if _, err := pre.Create(testCtx(t), identity.Identity{JID: "pre@example.com", Tel: []string{"+15551230001"}}); err != nil {
				t.Fatal(err)
			}
			pre.Close()

			cmd := exec.Command(os.Args[0], "-test.run=^TestBoltCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashEnv+"="+r.mode, crashPath+"="+path)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			waitLine := func(want string) {
				t.Helper()
				timer := time.NewTimer(time.Minute)
				defer timer.Stop()
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("helper exited before %q", want)
						}
						if strings.HasPrefix(l, "error") {
							t.Fatalf("helper: %s", l)
						}
						if l == want {
							return
						}
					case <-timer.C:
						t.Fatalf("helper did not print %q within a minute", want)
					}
				}
			}
			waitLine("started")
			start := time.Now()
			switch {
			case r.after < 0:
				waitLine("done")
				took = time.Since(start)
				if len(runs) == 3 {
					for _, pct := range []int{20, 40, 60, 70, 80, 90, 95} {
						runs = append(runs, run{fmt.Sprintf("at_%d%%", pct), "run", took * time.Duration(pct) / 100})
					}
				}
			case r.after > 0:
				// Deliberate kill timing, not synchronisation.
				time.Sleep(r.after)
			}
			if err := cmd.Process.Signal(os.Kill); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			for range lines {
			}

			s := openBolt(t, path, identity.BoltOptions{})
			ctx := testCtx(t)
			if err := identity.CheckBolt(s); err != nil {
				t.Fatalf("bbolt check after kill -9: %v", err)
			}
			n, err := s.Count(ctx)
			if err != nil {
				t.Fatal(err)
			}
			all, _, err := s.List(ctx, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != n {
				t.Errorf("List has %d identities, Count %d", len(all), n)
			}
			rev, _ := s.Rev(ctx)
			switch n {
			case 1:
				if rev != 1 {
					t.Errorf("none imported but Rev = %d, want 1", rev)
				}
				if _, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: person(0).Tel[0]}); !errors.Is(err, identity.ErrNotFound) {
					t.Errorf("none imported but a number resolves: %v", err)
				}
			case crashN + 1:
				if rev != crashN+1 {
					t.Errorf("all imported but Rev = %d, want %d", rev, crashN+1)
				}
				for _, i := range []int{0, crashN / 2, crashN - 1} {
					if got, err := s.Lookup(ctx, identity.Key{Kind: identity.KindTel, Value: person(i).Tel[0]}); err != nil || !got.Equal(person(i)) {
						t.Errorf("Lookup(%s) = %+v, %v", person(i).Tel[0], got, err)
					}
				}
			default:
				t.Fatalf("after kill -9: %d identities, want 1 (none imported) or %d (all)", n, crashN+1)
			}
			if r.mode == "block" && n != 1 {
				t.Errorf("killed inside the transaction, yet the import is visible")
			}
			if r.after < 0 && n != crashN+1 {
				t.Errorf("killed after the commit, yet the import is gone")
			}
			t.Logf("killed %v after start (import takes %v): %s", r.after, took, map[bool]string{true: "all", false: "none"}[n > 1])
			// And the store still works.
			if _, err := s.Create(ctx, identity.Identity{JID: "post@example.com"}); err != nil {
				t.Errorf("Create after recovery = %v", err)
			}
		})
	}
}

func BenchmarkBoltImport100k(b *testing.B) {
	ids := people(100_000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s, err := identity.OpenBolt(filepath.Join(b.TempDir(), "identity.db"), identity.BoltOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := s.Import(ctx, ids); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(ids)), "identities/op")
}

func BenchmarkBoltLookup(b *testing.B) {
	ctx := context.Background()
	s := openBolt(b, filepath.Join(b.TempDir(), "identity.db"), identity.BoltOptions{NoSync: true})
	if err := s.Import(ctx, people(10_000)); err != nil {
		b.Fatal(err)
	}
	key := identity.Key{Kind: identity.KindTel, Value: person(4711).Tel[0]}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Lookup(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBoltPut(b *testing.B) {
	ctx := context.Background()
	s := openBolt(b, filepath.Join(b.TempDir(), "identity.db"), identity.BoltOptions{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Put(ctx, person(i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
