package admin

import (
	"log"
	"log/slog"
	"strings"
)

// slogAdapter routes net/http's and promhttp's error logs to slog.
type slogAdapter struct{ log *slog.Logger }

// Println implements promhttp.Logger.
func (a slogAdapter) Println(v ...any) {
	a.log.Warn("metrics handler error", "err", strings.TrimSpace(sprint(v...)))
}

func (a slogAdapter) Write(p []byte) (int, error) {
	a.log.Warn("admin http error", "err", strings.TrimSpace(string(p)))
	return len(p), nil
}

func (a slogAdapter) std() *log.Logger { return log.New(a, "", 0) }

func sprint(v ...any) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(slog.AnyValue(x).String())
	}
	return b.String()
}
