package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestSipgoParseErrorsDemotedAndRedacted(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		log := slog.New(sipgoHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})})
		log.Error("failed to parse", "data", "INVITE x\r\nAuthorization: Digest response=\"secret\"\r\n", "error", "bad")
		log.Error("Read error", "error", "boom")
		out := buf.String()
		if strings.Contains(out, "secret") || strings.Contains(out, "Authorization") {
			t.Errorf("level %v: the message's data reached the log:\n%s", level, out)
		}
		if !strings.Contains(out, "Read error") {
			t.Errorf("level %v: other sipgo errors must pass unchanged:\n%s", level, out)
		}
		parse := strings.Contains(out, "unparseable SIP message dropped")
		if parse != (level == slog.LevelDebug) {
			t.Errorf("level %v: parse failure logged = %v, want only at debug:\n%s", level, parse, out)
		}
		if level == slog.LevelDebug && !strings.Contains(out, "bytes=") {
			t.Errorf("the debug record lacks the size:\n%s", out)
		}
	}
}

func TestLibraryLogsFollowTheLatestCommand(t *testing.T) {
	var first, second bytes.Buffer
	quietLibraries(slog.New(slog.NewTextHandler(&first, nil)))
	// A library derives its logger while the first command runs...
	lib := slog.New(forwardHandler{}).With("caller", "lib")
	quietLibraries(slog.New(slog.NewTextHandler(&second, nil)))
	// ...and logs after the second started: the record goes there.
	lib.Info("hello")
	if first.Len() != 0 || !strings.Contains(second.String(), "caller=lib") {
		t.Errorf("first %q second %q: want the record, with its attribute, in the latest logger only", first.String(), second.String())
	}
}
