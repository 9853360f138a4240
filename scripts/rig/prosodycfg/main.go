// Command prosodycfg prints the test rig's Prosody configuration
// (testenv.ProsodyConfig: every listener on 127.0.0.1, the cusax-gw
// component with its XEP-0356 privileges) for scripts/rig/prosody.sh, so
// that the demo's Prosody is exactly the one the tests run against. The
// component secret is read from standard input (one line), never from the
// command line.
//
//	printf %s "$SECRET" | go run ./scripts/rig/prosodycfg -dir /abs/dir -domain localhost > prosody.cfg.lua
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cusax-gw/cusax-gw/internal/testenv"
)

func main() {
	dir := flag.String("dir", "", "the server's directory (pid file, data, certs, admin socket)")
	domain := flag.String("domain", "localhost", "VirtualHost")
	component := flag.String("component", "", "component domain (default cusax.DOMAIN)")
	c2s := flag.Int("c2s-port", 5222, "client port on 127.0.0.1")
	comp := flag.Int("component-port", 5347, "component port on 127.0.0.1")
	privileged := flag.Bool("privileged", true, "grant the component its XEP-0356 privileges (mod_privilege)")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *dir, *domain, *component, *c2s, *comp, *privileged); err != nil {
		fmt.Fprintln(os.Stderr, "prosodycfg:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, dir, domain, component string, c2s, comp int, privileged bool) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if component == "" {
		component = "cusax." + domain
	}
	secret, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the secret from stdin: %w", err)
	}
	secret = strings.TrimSuffix(strings.TrimSuffix(secret, "\n"), "\r")
	if secret == "" {
		return fmt.Errorf("no component secret on stdin")
	}
	conf, err := testenv.ProsodyConfig(testenv.ProsodyConfigOptions{
		Dir: abs, Domain: domain, Component: component, Secret: secret,
		C2SPort: c2s, ComponentPort: comp, Privileged: privileged,
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, conf)
	return err
}
