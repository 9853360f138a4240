package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/cusax-gw/cusax-gw/internal/config"
)

// Exit codes of CONTRACT.md.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // usage error or invalid configuration
)

// Set at build time with -ldflags "-X main.version=… -X main.revision=…".
var (
	version  = "dev"
	revision = ""
)

const usage = `usage: cusax-gw COMMAND [flags]

Commands:
  run      -config FILE             run the gateway (SIGTERM/SIGINT: drain, then exit 0)
  check    -config FILE [-offline]  validate the configuration, then probe XMPP, Redis, PBX, ports
  identity -config FILE VERB ...    manage the identity map of the running daemon
  version                           print the version

Run 'cusax-gw COMMAND -h' for the flags of a command.
`

// cli runs one command line and returns the process exit code.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return cmdRun(ctx, rest, stderr, getenv)
	case "check":
		return cmdCheck(ctx, rest, stdout, stderr, getenv)
	case "identity":
		return cmdIdentity(ctx, rest, stdout, stderr, getenv)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "cusax-gw: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}
}

// newFlagSet returns a flag set that reports errors without exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("cusax-gw "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and rejects positional arguments; it returns the
// exit code to use, or -1 to go on.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage
	}
	return -1
}

// loadConfig loads and validates the configuration, printing every
// problem on its own line.
func loadConfig(path string, stderr io.Writer, getenv func(string) string) (*config.Config, bool) {
	cfg, err := config.LoadFile(path, getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, false
	}
	return cfg, true
}

// buildRevision returns the VCS revision: from -ldflags, else from the
// build information Go records.
func buildRevision() string {
	if revision != "" {
		return revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func versionString() string {
	return fmt.Sprintf("cusax-gw %s (revision %s, %s)", version, buildRevision(), runtime.Version())
}
