// Package check runs the probes of `cusax-gw check`: small functions, one
// per outside dependency (XMPP server, Redis, PBX, port ranges), that each
// report pass, warn or fail and why. Subsystems contribute probes; the
// command runs them concurrently and prints one line per probe in a fixed
// order.
package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Probe is one check of the outside world.
type Probe struct {
	Name string
	// Run performs the check. On success it returns a short description of
	// what was verified; on failure an error saying what is wrong.
	Run func(ctx context.Context) (string, error)
}

// Result is the outcome of one Probe.
type Result struct {
	Name     string
	Detail   string
	Err      error
	Duration time.Duration
}

// OK reports whether the probe passed or only warned.
func (r Result) OK() bool { return r.Err == nil || r.Warned() }

// Warned reports whether the probe returned a *Warning.
func (r Result) Warned() bool {
	var w *Warning
	return errors.As(r.Err, &w)
}

// Warning is what a probe returns for a condition the operator should see
// that does not make the check fail: Print shows it as WARN and still
// reports success.
type Warning struct{ Msg string }

func (w *Warning) Error() string { return w.Msg }

// Warnf returns a *Warning with a formatted message.
func Warnf(format string, args ...any) error {
	return &Warning{Msg: fmt.Sprintf(format, args...)}
}

// Run runs every probe concurrently, each with its own timeout, and returns
// the results in the order of probes. A probe that panics fails.
func Run(ctx context.Context, probes []Probe, timeout time.Duration) []Result {
	results := make([]Result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			start := time.Now()
			r := Result{Name: p.Name}
			func() {
				defer func() {
					if v := recover(); v != nil {
						r.Err = fmt.Errorf("probe panicked: %v", v)
					}
				}()
				r.Detail, r.Err = p.Run(pctx)
			}()
			if r.Err != nil && pctx.Err() == context.DeadlineExceeded {
				r.Err = fmt.Errorf("no answer within %s: %w", timeout, r.Err)
			}
			r.Duration = time.Since(start)
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

// Print writes one line per result ("PASS  name  detail", "WARN  name
// warning" or "FAIL  name  error") and reports whether none failed.
func Print(w io.Writer, results []Result) bool {
	width := 0
	for _, r := range results {
		width = max(width, len(r.Name))
	}
	ok := true
	for _, r := range results {
		status, text := "PASS", r.Detail
		switch {
		case r.Warned():
			status, text = "WARN", r.Err.Error()
		case r.Err != nil:
			status, text, ok = "FAIL", r.Err.Error(), false
		}
		text = strings.ReplaceAll(text, "\n", "; ")
		fmt.Fprintf(w, "%s  %-*s  %s\n", status, width, r.Name, text)
	}
	return ok
}
