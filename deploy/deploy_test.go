// Package deploy holds the operator kit of cusax-gw: the Grafana dashboard
// (grafana/cusax-gw.json), the Prometheus alert rules and their unit tests
// (prometheus/), and the systemd unit. It has no Go code; its tests keep
// the kit honest:
//
//   - the dashboard parses, takes its data source from a template variable
//     and shows every metric of the contract (CONTRACT.md) and of
//     docs/metrics.md;
//   - every alert has a summary, a description and a runbook section in
//     docs/metrics.md, and a promtool unit test;
//   - with CUSAX_INTEGRATION=1: promtool accepts the rules and their tests
//     pass, and every metric (and label) the dashboard and the rules use is
//     one the daemon registers, read from the /metrics of a real cusax-gw
//     built from this tree; every cusax_ metric it registers is documented.
package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cusax-gw/cusax-gw/b2bua"
	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

const (
	dashboardPath = "grafana/cusax-gw.json"
	rulesPath     = "prometheus/cusax-gw.rules.yml"
	rulesTestPath = "prometheus/cusax-gw.rules.test.yml"
	metricsDoc    = "../docs/metrics.md"
	// contractPath is the interface contract, kept beside the repository
	// (in shared/) rather than in it; docs/metrics.md mirrors its metrics.
	contractPath = "../../shared/CONTRACT.md"
)

// dashboard is the part of a Grafana dashboard the tests look at.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int                 `json:"id"`
	Type       string              `json:"type"`
	Title      string              `json:"title"`
	Datasource *datasource         `json:"datasource"`
	GridPos    *struct{ H, W int } `json:"gridPos"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// exprs returns every PromQL expression of the dashboard: panel targets and
// template variable queries.
func (d dashboard) exprs() []string {
	var out []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		switch q := v.Query.(type) {
		case string:
			out = append(out, q)
		case map[string]any:
			if s, ok := q["query"].(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q: want both set", d.Title, d.UID)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Error("no template variable datasource of type datasource (query prometheus)")
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d is zero or also used by %q", p.Title, p.ID, other)
			}
			ids[p.ID] = p.Title
			if p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %d: title %q, gridPos %+v: want a title and a size", p.ID, p.Title, p.GridPos)
			}
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
					t.Errorf("panel %q: target %q with refId %q: want both set", p.Title, tg.Expr, tg.RefID)
				}
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: target datasource %+v, want uid ${datasource}", p.Title, tg.Datasource)
				}
				if n := strings.Count(tg.Expr, "(") - strings.Count(tg.Expr, ")"); n != 0 {
					t.Errorf("panel %q: unbalanced parentheses in %s", p.Title, tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	used := metricNames(d.exprs())
	want := documentedMetrics(t)
	if c := contractMetrics(t); c != nil {
		for _, m := range c {
			if !slices.Contains(want, m) {
				t.Errorf("%s lists %s, docs/metrics.md does not", contractPath, m)
			}
		}
		want = append(want, c...)
	}
	for _, m := range want {
		if !strings.HasPrefix(m, "cusax_") {
			continue
		}
		if !used[m] && !used[m+"_bucket"] {
			t.Errorf("the dashboard shows no panel with %s", m)
		}
	}
}

// alertRules is the part of a Prometheus rule file the tests look at.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) alertRules {
	t.Helper()
	data, err := os.ReadFile(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(data, &r); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	return r
}

func (r alertRules) exprs() []string {
	var out []string
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			out = append(out, rule.Expr)
		}
	}
	return out
}

// TestRules checks what promtool does not: every alert is documented, has
// a severity, and is exercised by the unit tests.
func TestRules(t *testing.T) {
	r := loadRules(t)
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := headingAnchors(string(doc))
	tests, err := os.ReadFile(rulesTestPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			if rule.Alert == "" {
				continue
			}
			n++
			if s := rule.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", rule.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if rule.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", rule.Alert, a)
				}
			}
			want := "docs/metrics.md#" + strings.ToLower(rule.Alert)
			if got := rule.Annotations["runbook_url"]; got != want {
				t.Errorf("%s: runbook_url %q, want %q", rule.Alert, got, want)
			}
			if !anchors[strings.ToLower(rule.Alert)] {
				t.Errorf("%s: docs/metrics.md has no heading %q (its runbook)", rule.Alert, rule.Alert)
			}
			if !regexp.MustCompile(`alertname:\s*` + rule.Alert + `\s`).Match(tests) {
				t.Errorf("%s: no test in %s", rule.Alert, rulesTestPath)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no alert", rulesPath)
	}
}

// TestPromtool runs promtool (Debian package prometheus) on the rules and
// their unit tests.
func TestPromtool(t *testing.T) {
	testenv.Require(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (Debian package prometheus; run scripts/rig/install.sh as root): %v", err)
	}
	for _, args := range [][]string{
		{"check", "rules", rulesPath},
		{"test", "rules", rulesTestPath},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestMetricsRegistered starts a cusax-gw built from this tree and compares
// what its /metrics serves with what the dashboard, the rules and
// docs/metrics.md name.
func TestMetricsRegistered(t *testing.T) {
	testenv.Require(t)
	families := scrapeDaemon(t)

	// Series Prometheus adds itself, not the daemon.
	builtin := map[string]bool{"up": true}
	check := func(what string, exprs []string) {
		for name := range metricNames(exprs) {
			if builtin[name] {
				continue
			}
			if _, ok := families.lookup(name); !ok {
				t.Errorf("%s uses %s, which cusax-gw does not serve (not registered, or a vector with no series after startup and one SIP OPTIONS)", what, name)
			}
		}
		for _, sel := range selectors(exprs) {
			if builtin[sel.metric] {
				continue
			}
			f, ok := families.lookup(sel.metric)
			if !ok || len(f.samples) == 0 {
				continue // reported above, or no series yet to learn labels from
			}
			for _, m := range sel.matchers {
				if strings.Contains(m.value, "$") {
					continue
				}
				if !f.hasLabel(m.label) {
					t.Errorf("%s: %s{%s...}: %s has no label %s", what, sel.metric, m.label, f.name, m.label)
				} else if m.op == "=" && !f.hasValue(m.label, m.value) {
					t.Errorf("%s: %s{%s=%q}: %s never has that value (it has %v)", what, sel.metric, m.label, m.value, f.name, f.values(m.label))
				}
			}
		}
	}
	check(dashboardPath, loadDashboard(t).exprs())
	check(rulesPath, loadRules(t).exprs())

	documented := documentedMetrics(t)
	for _, m := range documented {
		if _, ok := families[m]; !ok {
			t.Errorf("docs/metrics.md documents %s, which cusax-gw does not register", m)
		}
	}
	for name := range families {
		if strings.HasPrefix(name, "cusax_") && !slices.Contains(documented, name) {
			t.Errorf("cusax-gw registers %s, which docs/metrics.md does not document (add it there, and a panel to %s)", name, dashboardPath)
		}
	}
}

// --- PromQL and exposition format helpers ----------------------------------

// metricRE finds the metric names the kit may use: ours, and the Go and
// process collectors the daemon registers. Bare identifiers like `up` are
// matched by builtinRE.
var (
	metricRE  = regexp.MustCompile(`\b(?:cusax|go|process)_[a-zA-Z0-9_]+\b`)
	builtinRE = regexp.MustCompile(`\bup\{`)
	// selectorRE matches name{matchers}.
	selectorRE = regexp.MustCompile(`\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
)

// metricNames returns the metric names used in exprs.
func metricNames(exprs []string) map[string]bool {
	out := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(stripStrings(e), -1) {
			out[m] = true
		}
		if builtinRE.MatchString(e) {
			out["up"] = true
		}
	}
	return out
}

// stripStrings blanks the contents of double-quoted strings, so that a
// label value never reads as a metric name.
func stripStrings(e string) string {
	return regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(e, `""`)
}

type matcher struct{ label, op, value string }

type selector struct {
	metric   string
	matchers []matcher
}

func selectors(exprs []string) []selector {
	var out []selector
	for _, e := range exprs {
		for _, m := range selectorRE.FindAllStringSubmatch(e, -1) {
			s := selector{metric: m[1]}
			for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
				s.matchers = append(s.matchers, matcher{mm[1], mm[2], mm[3]})
			}
			out = append(out, s)
		}
	}
	return out
}

// family is one metric family of a scrape.
type family struct {
	name    string
	typ     string
	samples []map[string]string // label sets
}

func (f family) hasLabel(l string) bool {
	if l == "le" && f.typ == "histogram" {
		return true
	}
	for _, s := range f.samples {
		if _, ok := s[l]; ok {
			return true
		}
	}
	return false
}

func (f family) hasValue(l, v string) bool {
	return slices.Contains(f.values(l), v)
}

func (f family) values(l string) []string {
	var out []string
	for _, s := range f.samples {
		if v, ok := s[l]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

type families map[string]*family

// lookup finds the family of a series name, mapping the _bucket, _sum and
// _count series of histograms and summaries to their family.
func (fs families) lookup(name string) (*family, bool) {
	if f, ok := fs[name]; ok {
		return f, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f, ok := fs[base]; ok && (f.typ == "histogram" || f.typ == "summary") {
				return f, true
			}
		}
	}
	return nil, false
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? `)

// parseExposition reads the Prometheus text format: # TYPE lines and the
// label sets of samples.
func parseExposition(r io.Reader) (families, error) {
	fs := families{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			fs[name] = &family{name: name, typ: typ}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unparseable sample line %q", line)
		}
		f, ok := fs.lookup(m[1])
		if !ok {
			return nil, fmt.Errorf("sample %q before its # TYPE line", line)
		}
		labels := map[string]string{}
		for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			labels[mm[1]] = mm[3]
		}
		f.samples = append(f.samples, labels)
	}
	return fs, sc.Err()
}

// --- documents ---------------------------------------------------------------

var docMetricRE = regexp.MustCompile("^\\| `((?:cusax|go|process)_[a-z0-9_]+)")

// documentedMetrics returns the metrics of docs/metrics.md's tables: rows
// starting with | `name...`.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		if m := docMetricRE.FindStringSubmatch(line); m != nil && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s documents no metric (want table rows | `cusax_...` |)", metricsDoc)
	}
	return out
}

// contractMetrics returns the metric names of CONTRACT.md's Metrics block,
// or nil when the contract is not beside the repository.
func contractMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(contractPath)
	if os.IsNotExist(err) {
		t.Logf("%s not found: checking against docs/metrics.md only", contractPath)
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "## Metrics")
	if !ok {
		t.Fatalf("%s has no ## Metrics section", contractPath)
	}
	_, block, _ := strings.Cut(rest, "```")
	block, _, _ = strings.Cut(block, "```")
	var out []string
	for _, m := range regexp.MustCompile(`\bcusax_[a-z0-9_]+`).FindAllString(block, -1) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) < 10 {
		t.Fatalf("%s: found only %v in the Metrics block", contractPath, out)
	}
	return out
}

// headingAnchors returns the GitHub anchors of the Markdown headings in doc
// (lowercase, spaces to dashes, punctuation dropped).
func headingAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		out[b.String()] = true
	}
	return out
}

// --- the daemon ----------------------------------------------------------------

// scrapeDaemon builds cmd/cusax-gw, runs it on loopback ports with an
// embedded store and no XMPP server or PBX, sends it one SIP OPTIONS once
// it logged "gateway started", reads /metrics, and stops it with SIGTERM
// (it must exit 0).
func scrapeDaemon(t *testing.T) families {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH, needed to build cmd/cusax-gw: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cusax-gw")
	build := exec.Command(goCmd, "build", "-o", bin, "./cmd/cusax-gw")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cusax-gw: %v\n%s", err, out)
	}

	admin, sip, closed := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	rtp := testenv.FreePortRange(t, 8)
	conf := fmt.Sprintf(`log: {level: info, format: json}
admin: {listen: "127.0.0.1:%d"}
identity: {backend: embedded, path: %q}
xmpp: {server: "127.0.0.1:%d", secret: "not-used"}
sip: {listen: ["udp://127.0.0.1:%d", "tcp://127.0.0.1:%d"], pbx: "sip:127.0.0.1:%d"}
rtp: {listen: 127.0.0.1, port_min: %d, port_max: %d}
shutdown: {drain: 1s}
`, admin, filepath.Join(dir, "identity.db"), closed, sip, sip, closed, rtp, rtp+7)
	confPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "run", "-config", confPath)
	cmd.Env = append(os.Environ(), "CUSAX_XMPP_SECRET=", "CUSAX_REDIS_URL=", "CUSAX_ADMIN_TOKEN=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	started := make(chan struct{})
	var logTail []string
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			line := sc.Text()
			logTail = append(logTail, line)
			if !once && strings.Contains(line, `"msg":"gateway started"`) {
				once = true
				close(started)
			}
		}
	}()
	go func() {
		<-logDone // the pipe must be drained before Wait closes it
		exited <- cmd.Wait()
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("cusax-gw did not exit within 30 s of SIGTERM")
		}
	}
	t.Cleanup(func() { _ = stop() })

	select {
	case <-started:
	case err := <-exited:
		stopped = true
		t.Fatalf("cusax-gw exited before it started: %v\n%s", err, strings.Join(logTail, "\n"))
	case <-time.After(60 * time.Second):
		t.Fatal("cusax-gw did not log \"gateway started\" within 60 s")
	}

	// Vectors without a child do not appear in /metrics: one SIP OPTIONS
	// creates the request and response series.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, reason, err := b2bua.ProbePBX(ctx, fmt.Sprintf("sip:127.0.0.1:%d", sip), "deploy-test"); err != nil || code != 200 {
		t.Fatalf("OPTIONS to cusax-gw = %d %s, %v; want 200", code, reason, err)
	}
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	fs, err := parseExposition(res.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("cusax-gw after SIGTERM: %v, want exit 0", err)
	}
	return fs
}
