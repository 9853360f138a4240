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
