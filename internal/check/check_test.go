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
