package check

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRunAndPrint(t *testing.T) {
	probes := []Probe{
		{Name: "good", Run: func(context.Context) (string, error) { return "all fine", nil }},
		{Name: "bad", Run: func(context.Context) (string, error) { return "", errors.New("refused") }},
		{Name: "slow", Run: func(ctx context.Context) (string, error) { <-ctx.Done(); return "", ctx.Err() }},
		{Name: "panicky", Run: func(context.Context) (string, error) { panic("boom") }},
	}
	res := Run(context.Background(), probes, 50*time.Millisecond)
	var buf bytes.Buffer
	if Print(&buf, res) {
		t.Error("Print reported success with failing probes")
	}
	want := []string{
		"PASS  good     all fine",
		"FAIL  bad      refused",
		"FAIL  slow     no answer within 50ms: context deadline exceeded",
		"FAIL  panicky  probe panicked: boom",
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Print =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !Print(&bytes.Buffer{}, res[:1]) {
		t.Error("Print reported failure with only passing probes")
	}
}

func TestWarning(t *testing.T) {
	probes := []Probe{
		{Name: "good", Run: func(context.Context) (string, error) { return "all fine", nil }},
		{Name: "tls", Run: func(context.Context) (string, error) { return "", Warnf("sip has no TLS; xmpp %s", "requires it") }},
	}
	res := Run(context.Background(), probes, time.Second)
	if !res[1].Warned() || !res[1].OK() || res[0].Warned() {
		t.Errorf("Warned/OK = %v/%v for a warning, Warned = %v for a pass; want true/true, false", res[1].Warned(), res[1].OK(), res[0].Warned())
	}
	var buf bytes.Buffer
	if !Print(&buf, res) {
		t.Error("Print reported failure with only a warning")
	}
	if want := "WARN  tls   sip has no TLS; xmpp requires it\n"; !strings.HasSuffix(buf.String(), want) {
		t.Errorf("Print =\n%s\nwant it to end with\n%s", buf.String(), want)
	}
	bad := append(res, Result{Name: "bad", Err: errors.New("refused")})
	if Print(&bytes.Buffer{}, bad) {
		t.Error("Print reported success with a failure beside a warning")
	}
}
