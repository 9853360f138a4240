package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds the configuration file, so that a wrong path (a log,
// a device) fails fast instead of being read whole.
const MaxFileSize = 1 << 20

// Error is one problem in a configuration: where it is and what is wrong.
// Load and Validate return several of them joined with errors.Join; each
// prints on one line.
type Error struct {
	File string // configuration file name, "" when unknown
	Line int    // 1-based line, 0 when the value did not come from the file
	Path string // dotted YAML path, e.g. "rtp.port_min"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors returns the individual *Error values inside err (as returned by
// Load or Validate), in order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ce *Error
		if errors.As(err, &ce) {
			out = append(out, ce)
		}
	}
	walk(err)
	return out
}

// LoadFile reads the configuration file at path; see Load.
func LoadFile(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read configuration: %v", errors.Unwrap(err))}
	}
	defer f.Close()
	return Load(f, path, getenv)
}

// Load parses a YAML configuration over Default, then applies the secret
// files and the CUSAX_* environment overlay (getenv may be nil). name is the
// file name used in errors; relative *_file paths are resolved against its
// directory. Load does not validate values: call Validate.
//
// Unknown keys, duplicate keys and values of the wrong type are reported
// all at once, each with its line number.
func Load(r io.Reader, name string, getenv func(string) string) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: name, Msg: fmt.Sprintf("cannot read configuration: %v", err)}
	}
	if len(data) > MaxFileSize {
		return nil, &Error{File: name, Msg: fmt.Sprintf("configuration larger than %d bytes", MaxFileSize)}
	}
	c := Default()
	c.lines = map[string]int{}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	d := decoder{file: name, lines: c.lines}
	if len(doc.Content) > 0 {
		d.decode(doc.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	if err := c.overlay(name, getenv); err != nil {
		return nil, err
	}
	return c, nil
}

// overlay applies the *_file secrets and the CUSAX_* environment.
func (c *Config) overlay(name string, getenv func(string) string) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	c.file = name
	dir := filepath.Dir(name)
	var errs []error
	secretFile := func(secret *Secret, file *string, path string) {
		if *file == "" {
			return
		}
		if *secret != "" {
			errs = append(errs, c.errorf(path, "set both %s and %s_file; keep one", lastKey(path), lastKey(path)))
			return
		}
		p := *file
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, c.errorf(path+"_file", "cannot read secret file %q: %v", *file, errors.Unwrap(err)))
			return
		}
		*secret = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	secretFile(&c.Admin.Token, &c.Admin.TokenFile, "admin.token")
	secretFile(&c.XMPP.Secret, &c.XMPP.SecretFile, "xmpp.secret")

	envFile := func(key string) (string, bool) {
		if v := getenv(key); v != "" {
			return v, true
		}
		if f := getenv(key + "_FILE"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, &Error{Path: key + "_FILE", Msg: fmt.Sprintf("cannot read secret file %q: %v", f, errors.Unwrap(err))})
				return "", false
			}
			return strings.TrimRight(string(b), "\r\n"), true
		}
		return "", false
	}
	if v, ok := envFile("CUSAX_ADMIN_TOKEN"); ok {
		c.Admin.Token = Secret(v)
		c.lines["admin.token"] = 0
	}
	if v, ok := envFile("CUSAX_XMPP_SECRET"); ok {
		c.XMPP.Secret = Secret(v)
		c.lines["xmpp.secret"] = 0
	}
	if v, ok := envFile("CUSAX_REDIS_URL"); ok {
		c.Identity.Redis.URL = Secret(v)
		c.lines["identity.redis.url"] = 0
	}
	if v := getenv("CUSAX_LOG_LEVEL"); v != "" {
		c.Log.Level = v
		c.lines["log.level"] = 0
	}
	if v := getenv("CUSAX_LOG_FORMAT"); v != "" {
		c.Log.Format = v
		c.lines["log.format"] = 0
	}
	if v := getenv("CUSAX_LOG_BUFFER"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, &Error{Path: "CUSAX_LOG_BUFFER", Msg: fmt.Sprintf("must be true or false, got %q", v)})
		} else {
			c.Log.Buffer = b
			c.lines["log.buffer"] = 0
		}
	}
	return errors.Join(errs...)
}

func lastKey(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}

// decoder walks a YAML node tree into a Config by reflection, so that every
// unknown key, duplicate key and badly typed value is reported with its
// path and line, not only the first one.
type decoder struct {
	file  string
	lines map[string]int
	errs  []error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var durationType = reflect.TypeFor[Duration]()

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for depth := 0; n.Kind == yaml.AliasNode; depth++ {
		if depth > 8 || n.Alias == nil {
			d.fail(n, path, "alias nests too deeply")
			return
		}
		n = n.Alias
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		if v.Kind() != reflect.Struct {
			v.SetZero()
		}
		return
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a duration such as 30s or 10m")
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.fail(n, path, "want a duration such as 30s or 10m, got %q", n.Value)
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case v.Kind() == reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.fail(n, path, "want true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		var i int
		if n.Kind != yaml.ScalarNode || n.Decode(&i) != nil {
			d.fail(n, path, "want an integer, got %s", describe(n))
			return
		}
		v.SetInt(int64(i))
	default:
		panic(fmt.Sprintf("config: unsupported field type %s at %s", v.Type(), path))
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of keys, got %s", describe(n))
		return
	}
	fields := map[string]int{}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if tag := f.Tag.Get("yaml"); tag != "" && f.IsExported() {
			fields[tag] = i
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		sub := key
		if path != "" {
			sub = path + "." + key
		}
		if first, dup := seen[key]; dup {
			d.fail(k, sub, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[key] = k.Line
		idx, ok := fields[key]
		if !ok {
			d.fail(k, sub, "unknown key%s", suggest(key, fields))
			continue
		}
		d.decode(val, v.Field(idx), sub)
		d.lines[sub] = k.Line
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

// suggest names the known key closest to an unknown one, for typos.
func suggest(key string, known map[string]int) string {
	best, bestDist := "", 3
	for k := range known {
		if dist := editDistance(key, k); dist < bestDist || (dist == bestDist && best != "" && k < best) {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
