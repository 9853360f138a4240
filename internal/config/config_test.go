package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func TestExampleIsDefault(t *testing.T) {
	c, err := LoadFile("../../config.example.yaml", noEnv)
	if err != nil {
		t.Fatalf("LoadFile(config.example.yaml) = %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config.example.yaml does not validate: %v", err)
	}
	// The example documents the defaults: loading it must give Default().
	want := Default()
	c.lines, c.file = nil, ""
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config.example.yaml differs from Default():\n got %+v\nwant %+v", c, want)
	}
	// And it must mention every key the decoder knows.
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range allPaths(reflect.TypeFor[Config](), "") {
		key := path[strings.LastIndexByte(path, '.')+1:]
		if !bytes.Contains(data, []byte(key+":")) {
			t.Errorf("config.example.yaml does not document %s", path)
		}
	}
}

func allPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || !f.IsExported() {
			continue
		}
		p := tag
		if prefix != "" {
			p = prefix + "." + tag
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			out = append(out, allPaths(f.Type, p)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

func TestEmptyFileIsDefault(t *testing.T) {
	c, err := Load(strings.NewReader(""), "empty.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestGood(t *testing.T) {
	c, err := LoadFile("testdata/good.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := c.XMPP.Secret.Reveal(), "s3cr$t with $dollars"; got != want {
		t.Errorf("secret from secret_file = %q, want %q", got, want)
	}
	if got, want := c.RTP.Timeout.D(), 90*time.Second; got != want {
		t.Errorf("rtp.timeout = %v, want %v", got, want)
	}
	if got, want := len(c.SIPListeners()), 3; got != want {
		t.Errorf("SIPListeners() = %d entries, want %d", got, want)
	}
	if got, want := c.Line("rtp.port_min"), 43; got != want {
		t.Errorf(`Line("rtp.port_min") = %d, want %d`, got, want)
	}
	if got := c.TrustedPrefixes(); len(got) != 2 || got[1].String() != "192.0.2.10/32" {
		t.Errorf("TrustedPrefixes() = %v, want [..., 192.0.2.10/32]", got)
	}
	if u := c.PBXURI(); u.Host != "127.0.0.1" || u.Port != 5070 {
		t.Errorf("PBXURI() = %v, want host 127.0.0.1 port 5070", &u)
	}
}

// TestInvalid loads every testdata/invalid-*.yaml; its first line says
// "# want: MESSAGE" and exactly that one problem must be reported.
func TestInvalid(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/invalid-*.yaml: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be '# want: MESSAGE'", f)
			}
			want = strings.ReplaceAll(want, "config.yaml", f)
			c, err := LoadFile(f, noEnv)
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatalf("Load+Validate(%s) = nil, want %q", f, want)
			}
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Load+Validate(%s) = %q, want prefix %q", f, err, want)
			}
			if n := len(Errors(err)); n != 1 && !strings.Contains(f, "syntax") {
				t.Errorf("Load+Validate(%s) reported %d problems, want 1: %v", f, n, err)
			}
			if strings.Contains(err.Error(), "\n") && len(Errors(err)) == 1 {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	in := `log:
  level: loud
  format: xml
  colour: red
rtp:
  port_min: 30001
  port_max: 30000
  backend: kernel
`
	_, err := Load(strings.NewReader(in), "c.yaml", noEnv)
	if err == nil {
		t.Fatal("Load accepted an unknown key")
	}
	if !strings.Contains(err.Error(), "c.yaml:4: log.colour: unknown key") {
		t.Errorf("Load error = %q, want the unknown key with its line", err)
	}
	in = strings.Replace(in, "  colour: red\n", "", 1)
	c, err := Load(strings.NewReader(in), "c.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	var got []string
	for _, e := range Errors(err) {
		got = append(got, e.Path)
	}
	want := []string{"log.level", "log.format", "rtp.port_min", "rtp.backend"} // file order
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Validate() paths = %v, want %v (err %v)", got, want, err)
	}
}

func TestEnvOverlay(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CUSAX_XMPP_SECRET":      "$ecret-from-env",
		"CUSAX_ADMIN_TOKEN_FILE": tokenFile,
		"CUSAX_REDIS_URL":        "redis://:pw@127.0.0.1:6390/2",
		"CUSAX_LOG_LEVEL":        "debug",
		"CUSAX_LOG_BUFFER":       "false",
	}
	c, err := Load(strings.NewReader("xmpp:\n  secret: from-yaml\nlog:\n  level: warn\n"), filepath.Join(dir, "c.yaml"), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"xmpp.secret", c.XMPP.Secret.Reveal(), "$ecret-from-env"},
		{"admin.token", c.Admin.Token.Reveal(), "tok-from-file"},
		{"identity.redis.url", c.Identity.Redis.URL.Reveal(), "redis://:pw@127.0.0.1:6390/2"},
		{"log.level", c.Log.Level, "debug"},
		{"log.buffer", strconv.FormatBool(c.Log.Buffer), "false"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if c.SlogLevel() != slog.LevelDebug {
		t.Errorf("SlogLevel() = %v, want debug", c.SlogLevel())
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := Default()
	c.XMPP.Secret = "hunter2"
	c.Admin.Token = "tok3n"
	c.Identity.Redis.URL = "redis://:pw@127.0.0.1:6379/0"
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("cfg", "secret", c.XMPP.Secret, "token", c.Admin.Token)
	s := buf.String() + fmt.Sprintf("%v %+v %#v %s", c, c, c, c.XMPP.Secret)
	for _, secret := range []string{"hunter2", "tok3n", ":pw@"} {
		if strings.Contains(s, secret) {
			t.Errorf("secret %q printed: %s", secret, s)
		}
	}
	if !strings.Contains(buf.String(), "REDACTED") {
		t.Errorf("log line %q does not say REDACTED", buf.String())
	}
}

func TestRedisURLErrorHidesPassword(t *testing.T) {
	c := Default()
	c.Identity.Backend = "redis"
	c.Identity.Redis.URL = "redis://:topsecret@127.0.0.1:6379/notanumber"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad database number")
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	_, err := Load(strings.NewReader(strings.Repeat("#", MaxFileSize+1)), "big.yaml", noEnv)
	var ce *Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(huge) = %v, want a size error", err)
	}
}

func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range append(files, "../../config.example.yaml") {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("sip: {listen: [{a: b}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Load(bytes.NewReader(data), "fuzz.yaml", noEnv)
		if err != nil {
			for _, e := range Errors(err) {
				if e.Msg == "" {
					t.Errorf("empty message in %v", err)
				}
			}
			return
		}
		_ = c.Validate()
		_ = c.Warnings()
		_ = c.SIPListeners()
		_ = c.TrustedPrefixes()
	})
}

func TestEnvLogBufferInvalid(t *testing.T) {
	_, err := Load(strings.NewReader("log:\n  level: info\n"), "c.yaml", func(k string) string {
		if k == "CUSAX_LOG_BUFFER" {
			return "maybe"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), `CUSAX_LOG_BUFFER: must be true or false, got "maybe"`) {
		t.Errorf("Load with CUSAX_LOG_BUFFER=maybe = %v, want an error naming it", err)
	}
}
