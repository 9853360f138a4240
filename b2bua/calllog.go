package b2bua

import (
	"context"
	"log/slog"
	"time"
)

// callLog logs with the call's call_id. It is not a slog.Logger.With: a
// With per call preformats the attribute into a copy of the handler
// (allocations and JSON encoding on every call), though most calls log
// only their start and end lines, which callStart and callEnd hand to the
// handler as records they build (no allocation for five attributes or
// fewer, and no runtime.Callers for a source position the handlers do not
// print: slog.Logger.LogAttrs spends a quarter of its time there).
type callLog struct {
	l  *slog.Logger
	id string
}

func (cl callLog) log(level slog.Level, msg string, args []any) {
	ctx := context.Background()
	if !cl.l.Enabled(ctx, level) {
		return
	}
	cl.l.Log(ctx, level, msg, append([]any{"call_id", cl.id}, args...)...)
}

// enabled reports whether records at level are logged (a check that
// saves building the arguments of a line, which allocates).
func (cl callLog) enabled(level slog.Level) bool { return cl.l.Enabled(context.Background(), level) }

func (cl callLog) Debug(msg string, args ...any) { cl.log(slog.LevelDebug, msg, args) }
func (cl callLog) Info(msg string, args ...any)  { cl.log(slog.LevelInfo, msg, args) }
func (cl callLog) Warn(msg string, args ...any)  { cl.log(slog.LevelWarn, msg, args) }
func (cl callLog) Error(msg string, args ...any) { cl.log(slog.LevelError, msg, args) }

// callStart is the "call start" line.
func (cl callLog) callStart(origin, from, to, bCallID string) {
	h := cl.l.Handler()
	if !h.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "call start", 0)
	r.AddAttrs(slog.String("call_id", cl.id), slog.String("origin", origin), slog.String("from", from),
		slog.String("to", to), slog.String("b_call_id", bCallID))
	h.Handle(context.Background(), r)
}

// callEnd is the "call end" line.
func (cl callLog) callEnd(result string, code int, d time.Duration) {
	h := cl.l.Handler()
	if !h.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "call end", 0)
	r.AddAttrs(slog.String("call_id", cl.id), slog.String("result", result), slog.Int("code", code),
		slog.String("duration", d.Round(time.Millisecond).String()))
	h.Handle(context.Background(), r)
}
