package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cusax-gw/cusax-gw/identity"
)

const identityUsage = `usage: cusax-gw identity [-config FILE | -admin URL] VERB [args]

Verbs (they talk to the running daemon's admin API; the token comes from the
configuration or CUSAX_ADMIN_TOKEN):
  add  -jid JID [-sip AOR]... [-tel NUMBER]... [-name NAME]
  get  JID|sip:AOR|tel:NUMBER|NUMBER
  list
  rm   JID
  import FILE     CSV (jid,sip,tel,name; optional header; ';' between repeated values) or YAML
  export          YAML list on stdout, importable again
  passwd -sip AOR [-file FILE] [-delete]
                  set the SIP digest password of an AOR (sip.auth: local), read from
                  the first line of stdin or FILE (never from the command line);
                  -delete removes it
`

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// apiClient talks to the admin API of a running daemon.
type apiClient struct {
	base  string
	token string
	http  *http.Client
	stdin io.Reader // import -, passwd
}

func cmdIdentity(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return cmdIdentityIO(ctx, args, os.Stdin, stdout, stderr, getenv)
}

// cmdIdentityIO is cmdIdentity reading stdin from stdin.
func cmdIdentityIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("identity", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, identityUsage) }
	cfgPath := fs.String("config", "", "configuration `file` (admin address and token)")
	adminURL := fs.String("admin", "", "admin API base `URL`, e.g. http://127.0.0.1:9464 (instead of -config)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	c := &apiClient{http: &http.Client{Timeout: 5 * time.Minute}, stdin: stdin}
	switch {
	case *adminURL != "":
		u, err := url.Parse(*adminURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fmt.Fprintf(stderr, "cusax-gw identity: -admin: want a URL such as http://127.0.0.1:9464, got %q\n", *adminURL)
			return exitUsage
		}
		c.base = strings.TrimRight(*adminURL, "/")
		c.token = getenv("CUSAX_ADMIN_TOKEN")
	default:
		path := *cfgPath
		if path == "" {
			path = "config.yaml"
		}
		cfg, ok := loadConfig(path, stderr, getenv)
		if !ok {
			return exitUsage
		}
		host, port, _ := net.SplitHostPort(cfg.Admin.Listen)
		if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		c.base = "http://" + net.JoinHostPort(host, port)
		c.token = cfg.Admin.Token.Reveal()
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, identityUsage)
		return exitUsage
	}
	verb, rest := fs.Arg(0), fs.Args()[1:]
	var err error
	switch verb {
	case "add":
		err = c.add(ctx, rest, stdout, stderr)
	case "get":
		if len(rest) != 1 {
			return usageErr(stderr, "get takes one JID, sip: URI, tel: URI or number")
		}
		err = c.get(ctx, rest[0], stdout)
	case "list":
		if len(rest) != 0 {
			return usageErr(stderr, "list takes no arguments")
		}
		err = c.list(ctx, stdout)
	case "rm":
		if len(rest) != 1 {
			return usageErr(stderr, "rm takes one JID")
		}
		err = c.do(ctx, "DELETE", "/api/v1/identities/"+url.PathEscape(rest[0]), nil, nil)
		if err == nil {
			fmt.Fprintf(stdout, "removed %s\n", rest[0])
		}
	case "import":
		if len(rest) != 1 {
			return usageErr(stderr, "import takes one FILE (- for stdin)")
		}
		err = c.importFile(ctx, rest[0], stdout)
	case "export":
		if len(rest) != 0 {
			return usageErr(stderr, "export takes no arguments")
		}
		err = c.export(ctx, stdout)
	case "passwd":
		err = c.passwd(ctx, rest, stdout, stderr)
	default:
		return usageErr(stderr, fmt.Sprintf("unknown verb %q", verb))
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintln(stderr, "cusax-gw identity:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return exitUsage
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	return exitOK
}

var errUsage = errors.New("usage")

func usageErr(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "cusax-gw identity: %s\n%s", msg, identityUsage)
	return exitUsage
}

// apiError is a non-2xx answer of the admin API.
type apiError struct {
	Status int
	Msg    string
	Rows   []struct {
		Row   int    `json:"row"`
		Error string `json:"error"`
	}
}

func (e *apiError) Error() string {
	if e.Status == http.StatusNotFound {
		return "not found"
	}
	return e.Msg
}

// do sends one request with the bearer token, decoding a JSON answer into
// out (unless nil). Non-2xx answers become *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s: %w (is cusax-gw running?)", c.base, unwrapURLError(err))
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 512<<20))
	if err != nil {
		return fmt.Errorf("admin API %s: %w", c.base, err)
	}
	if res.StatusCode/100 != 2 {
		ae := &apiError{Status: res.StatusCode}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			ae.Msg = e.Error
		} else {
			ae.Msg = fmt.Sprintf("admin API answered %s", res.Status)
		}
		_ = json.Unmarshal(data, ae)
		if res.StatusCode == http.StatusUnauthorized {
			ae.Msg += " (set admin.token in the configuration or CUSAX_ADMIN_TOKEN)"
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin API %s: bad answer: %w", c.base, err)
		}
	}
	if lp, ok := out.(*linkPage); ok {
		lp.next = nextAfter(res.Header.Get("Link"))
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

type wireIdentity struct {
	JID  string   `json:"jid"`
	SIP  []string `json:"sip"`
	Tel  []string `json:"tel"`
	Name string   `json:"name"`
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (c *apiClient) add(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("identity add", stderr)
	jid := fs.String("jid", "", "bare `JID` of the user (required)")
	name := fs.String("name", "", "display `name`")
	var sips, tels stringList
	fs.Var(&sips, "sip", "SIP address of record (repeatable)")
	fs.Var(&tels, "tel", "phone number (repeatable)")
	if code := parseFlags(fs, args); code >= 0 {
		return fmt.Errorf("%w: add: bad flags", errUsage)
	}
	if *jid == "" {
		return fmt.Errorf("%w: add: -jid is required", errUsage)
	}
	var out wireIdentity
	if err := c.do(ctx, "POST", "/api/v1/identities", wireIdentity{JID: *jid, SIP: sips, Tel: tels, Name: *name}, &out); err != nil {
		return err
	}
	printJSON(stdout, out)
	return nil
}

func (c *apiClient) get(ctx context.Context, what string, stdout io.Writer) error {
	var out wireIdentity
	if err := c.do(ctx, "GET", "/api/v1/lookup?uri="+url.QueryEscape(what), nil, &out); err != nil {
		return err
	}
	printJSON(stdout, out)
	return nil
}

// linkPage is a list page and the cursor of the next one.
type linkPage struct {
	items []wireIdentity
	next  string
}

func (p *linkPage) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &p.items) }

func nextAfter(link string) string {
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start < 0 || end < start || !strings.Contains(link, `rel="next"`) {
		return ""
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil {
		return ""
	}
	return u.Query().Get("after")
}

func (c *apiClient) all(ctx context.Context) ([]wireIdentity, error) {
	var all []wireIdentity
	after := ""
	for {
		var p linkPage
		if err := c.do(ctx, "GET", "/api/v1/identities?limit=1000&after="+url.QueryEscape(after), nil, &p); err != nil {
			return nil, err
		}
		all = append(all, p.items...)
		if p.next == "" || p.next == after {
			return all, nil
		}
		after = p.next
	}
}

func (c *apiClient) list(ctx context.Context, stdout io.Writer) error {
	all, err := c.all(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JID\tSIP\tTEL\tNAME")
	for _, id := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id.JID, strings.Join(id.SIP, ","), strings.Join(id.Tel, ","), id.Name)
	}
	return tw.Flush()
}

func (c *apiClient) export(ctx context.Context, stdout io.Writer) error {
	all, err := c.all(ctx)
	if err != nil {
		return err
	}
	ids := make([]identity.Identity, len(all))
	for i, w := range all {
		ids[i] = identity.Identity{JID: w.JID, SIP: w.SIP, Tel: w.Tel, Name: w.Name}
	}
	return identity.WriteExport(stdout, ids)
}

func (c *apiClient) importFile(ctx context.Context, path string, stdout io.Writer) error {
	r := c.stdin
	name := "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r, name = f, path
	}
	recs, err := identity.ReadImport(r, name)
	if err != nil {
		return fmt.Errorf("%v\nnothing imported", err)
	}
	body := make([]wireIdentity, len(recs))
	for i, rec := range recs {
		id := rec.Identity
		body[i] = wireIdentity{JID: id.JID, SIP: id.SIP, Tel: id.Tel, Name: id.Name}
	}
	var out struct {
		Imported int `json:"imported"`
	}
	err = c.do(ctx, "POST", "/api/v1/import", body, &out)
	var ae *apiError
	if errors.As(err, &ae) && len(ae.Rows) > 0 {
		var lines []string
		for _, row := range ae.Rows {
			line := 0
			if row.Row >= 0 && row.Row < len(recs) {
				line = recs[row.Row].Line
			}
			lines = append(lines, fmt.Sprintf("%s:%d: %s", name, line, strings.TrimPrefix(row.Error, "identity: ")))
		}
		return fmt.Errorf("%s\nnothing imported", strings.Join(lines, "\n"))
	}
	if err != nil {
		return fmt.Errorf("%w\nnothing imported", err)
	}
	fmt.Fprintf(stdout, "imported %d identities\n", out.Imported)
	return nil
}

// passwd sets (or with -delete removes) the digest password of an AOR:
// it finds the AOR's identity, then PUTs the password to its
// credentials. The password comes from the first line of stdin or -file,
// never from argv (which other users of the machine can read).
func (c *apiClient) passwd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("identity passwd", stderr)
	aor := fs.String("sip", "", "the SIP `AOR` whose password to set (required)")
	file := fs.String("file", "", "read the password from the first line of `FILE` (default: stdin)")
	del := fs.Bool("delete", false, "remove the AOR's password")
	if code := parseFlags(fs, args); code >= 0 {
		return fmt.Errorf("%w: passwd: bad flags", errUsage)
	}
	if *aor == "" {
		return fmt.Errorf("%w: passwd: -sip is required", errUsage)
	}
	if *del && *file != "" {
		return fmt.Errorf("%w: passwd: -delete takes no -file", errUsage)
	}
	var id wireIdentity
	if err := c.do(ctx, "GET", "/api/v1/lookup?uri="+url.QueryEscape(*aor), nil, &id); err != nil {
		return err
	}
	path := "/api/v1/identities/" + url.PathEscape(id.JID) + "/credentials"
	if *del {
		if err := c.do(ctx, "DELETE", path+"?sip="+url.QueryEscape(*aor), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed the password of %s (%s)\n", *aor, id.JID)
		return nil
	}
	r, name := c.stdin, "stdin"
	if *file != "" && *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		r, name = f, *file
	} else if f, ok := r.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintf(stderr, "password for %s (one line; it is echoed: pipe it in or use -file to avoid that): ", *aor)
		}
	}
	pw, err := readPassword(r)
	if err != nil {
		return fmt.Errorf("passwd: %s: %w", name, err)
	}
	body := struct {
		SIP      string `json:"sip"`
		Password string `json:"password"`
	}{*aor, pw}
	if err := c.do(ctx, "PUT", path, body, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "password set for %s (%s)\n", *aor, id.JID)
	return nil
}

// readPassword returns the first line of r without its line break.
func readPassword(r io.Reader) (string, error) {
	buf := make([]byte, 0, 128)
	one := make([]byte, 1)
	for len(buf) <= identity.MaxPasswordLen {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			buf = append(buf, one[0])
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	if len(buf) > identity.MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", identity.MaxPasswordLen)
	}
	pw := strings.TrimSuffix(string(buf), "\r")
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}
