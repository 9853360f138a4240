#!/usr/bin/env bash
# test.sh is THE test command of cusax-gw (the README's, and CI's through
# .ci/run). From the repository root:
#
#	bash scripts/test.sh
#
# Steps, each timed, stopping at the first failure:
#
#	rig          install the real servers the integration tests start
#	             (scripts/rig/install.sh, as root; otherwise only checked)
#	toolchain    GOTOOLCHAIN=go1.27.3 (go.mod keeps `go 1.26`; Go 1.26.8 has
#	             standard-library vulnerabilities fixed in 1.26.10)
#	tools        staticcheck, govulncheck, gotestsum at pinned versions
#	deps         go mod download; every package loads
#	gofmt        gofmt -l . prints nothing
#	vet          go vet ./...
#	staticcheck  staticcheck ./...
#	vulndb       offline Go vulnerability database built from the
#	             golang.org/x/vulndb module with its cmd/indexdb
#	govulncheck  govulncheck -db file://DB ./...
#	test         CUSAX_INTEGRATION=1 go test -race -count=1 -timeout 20m ./...
#
# `bash scripts/test.sh -lint` runs every step but rig and test (no root,
# no servers needed).
#
# Tools and the vulnerability database are cached outside the repository in
# ${XDG_CACHE_HOME:-$HOME/.cache}/cusax-gw (override with CUSAX_CACHE_DIR),
# keyed by version, so a second run skips them. Everything comes through the
# Go module proxy; nothing else is downloaded.
set -euo pipefail

# Pinned versions. The Dockerfile, Makefile and docs/deploy.md repeat
# GO_TOOLCHAIN: bump it there too.
GO_TOOLCHAIN=go1.27.3
STATICCHECK_VERSION=v0.8.2       # honnef.co/go/tools
GOVULNCHECK_VERSION=v1.9.0       # golang.org/x/vuln
GOTESTSUM_VERSION=v1.13.0        # gotest.tools/gotestsum
# Newest pseudo-version the module proxy served on 2026-11-26
# (`go mod download -json golang.org/x/vulndb@latest`; @master is refused).
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

LINT_ONLY=0
case "${1:-}" in
"") ;;
-lint | --lint) LINT_ONLY=1 ;;
*)
	echo "usage: bash scripts/test.sh [-lint]" >&2
	exit 2
	;;
esac

cd "$(dirname "$0")/.."

CACHE=${CUSAX_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/cusax-gw}

# A machine may start with Go installed but not on PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH=/usr/local/go/bin:$PATH
fi

# --- step bookkeeping -----------------------------------------------------

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }

T0=$(now)
CURRENT=""
STEP_START=""
SUMMARY=()

begin() {
	CURRENT=$1
	STEP_START=$(now)
	printf '\n==> %s\n' "$1"
}

end() {
	local d
	d=$(elapsed "$STEP_START" "$(now)")
	SUMMARY+=("$(printf '%-12s %8s  %s' "$CURRENT" "$d" ok)")
	printf '<== %s ok (%s)\n' "$CURRENT" "$d"
	CURRENT=""
}

print_summary() {
	local line
	printf '\n==> step durations\n'
	for line in "${SUMMARY[@]}"; do
		printf '    %s\n' "$line"
	done
}

fail() {
	printf '\nFAIL [%s]: %s\n' "${CURRENT:-setup}" "$*" >&2
	exit 1
}

on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		if [ -n "$CURRENT" ]; then
			SUMMARY+=("$(printf '%-12s %8s  %s' "$CURRENT" "$(elapsed "$STEP_START" "$(now)")" "FAILED")")
		fi
		print_summary
		printf '\n==> test.sh: FAILED at step %s (exit %d, total %s)\n' \
			"${CURRENT:-setup}" "$rc" "$(elapsed "$T0" "$(now)")" >&2
	fi
}
trap on_exit EXIT

# --- rig: the real servers ------------------------------------------------

begin rig
if [ "$LINT_ONLY" = 1 ]; then
	echo "-lint: skipped"
elif [ "$(id -u)" -eq 0 ]; then
	[ -f scripts/rig/install.sh ] ||
		fail "scripts/rig/install.sh is missing; it installs the Debian packages the integration tests need"
	bash scripts/rig/install.sh || fail "scripts/rig/install.sh failed (see its output above)"
else
	missing=()
	for cmd in prosody prosodyctl ejabberdctl redis-server kamailio sipp baresip rtpengine promtool; do
		PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		fail "not root and the integration test servers are missing (${missing[*]});" \
			"install them once with: sudo bash scripts/rig/install.sh"
	fi
	echo "not root: rig packages present, install skipped"
fi
end

# --- toolchain --------------------------------------------------------------

begin toolchain
export GOTOOLCHAIN=$GO_TOOLCHAIN
export GOWORK=off
# The first use downloads the toolchain (about 76 MB) into the module cache.
gover=$(go env GOVERSION) ||
	fail "cannot run the $GO_TOOLCHAIN toolchain (GOTOOLCHAIN=$GO_TOOLCHAIN fetches it through the Go module proxy; error above)"
[ "$gover" = "$GO_TOOLCHAIN" ] || fail "GOTOOLCHAIN=$GO_TOOLCHAIN gave $gover"
go version
GOROOT_DIR=$(go env GOROOT)
end

# --- tools ------------------------------------------------------------------

TOOLS=$CACHE/tools/$GO_TOOLCHAIN

# tool NAME PACKAGE VERSION: print the path of NAME built from PACKAGE@VERSION,
# installing it on first use. Installs go to a temporary GOBIN and are moved
# into place, so an interrupted run never leaves a half-written binary.
tool() {
	local name=$1 pkg=$2 version=$3
	local dir=$TOOLS/$name@$version
	if [ ! -x "$dir/$name" ]; then
		echo "installing $pkg@$version" >&2
		mkdir -p "$TOOLS"
		local tmp
		tmp=$(mktemp -d "$TOOLS/.install.XXXXXX")
		# Outside the repository, so our go.mod and go.sum are not involved.
		if ! (cd "$tmp" && GOBIN=$tmp/bin GOFLAGS='' go install "$pkg@$version") >&2; then
			rm -rf "$tmp"
			return 1
		fi
		rm -rf "$dir"
		mv "$tmp/bin" "$dir"
		rm -rf "$tmp"
	fi
	printf '%s\n' "$dir/$name"
}

begin tools
STATICCHECK=$(tool staticcheck honnef.co/go/tools/cmd/staticcheck "$STATICCHECK_VERSION") ||
	fail "go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION failed"
GOVULNCHECK=$(tool govulncheck golang.org/x/vuln/cmd/govulncheck "$GOVULNCHECK_VERSION") ||
	fail "go install golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION failed"
GOTESTSUM=$(tool gotestsum gotest.tools/gotestsum "$GOTESTSUM_VERSION") ||
	fail "go install gotest.tools/gotestsum@$GOTESTSUM_VERSION failed"
"$STATICCHECK" -version
"$GOVULNCHECK" -version
"$GOTESTSUM" --version
end

# --- deps -------------------------------------------------------------------

begin deps
go mod download || fail "go mod download failed"
# Every package (tests included) loads: go.mod and go.sum are complete.
go list -deps -test ./... >/dev/null ||
	fail "packages do not load (run: GOTOOLCHAIN=$GO_TOOLCHAIN go mod tidy)"
end

# --- static checks ----------------------------------------------------------

begin gofmt
unformatted=$("$GOROOT_DIR/bin/gofmt" -l .) || fail "gofmt could not parse every file"
if [ -n "$unformatted" ]; then
	printf '%s\n' "$unformatted" >&2
	fail "these files need gofmt -w (listed above)"
fi
end

begin vet
go vet ./... || fail "go vet reported problems (above)"
end

begin staticcheck
# staticcheck only warns (exit 0) when ./... matches no package.
sc_out=$(mktemp)
"$STATICCHECK" ./... 2>&1 | tee "$sc_out" || { rm -f "$sc_out"; fail "staticcheck reported problems (above)"; }
if grep -q 'matched no packages' "$sc_out"; then
	rm -f "$sc_out"
	fail "staticcheck checked no package"
fi
rm -f "$sc_out"
end

# --- vulnerabilities (offline database) ---------------------------------------

# The online database cannot be reached from here, so build one from the
# OSV files in the golang.org/x/vulndb module (data/osv) with the module's
# own cmd/indexdb, which writes the v1 layout govulncheck reads from
# file:// URLs (index/db.json, index/modules.json, index/vulns.json, ID/*.json,
# each also gzipped). Built once per pinned version.
begin vulndb
VULNDB=$CACHE/vulndb/$VULNDB_VERSION
if [ -f "$VULNDB/index/db.json" ] && [ -f "$VULNDB/index/modules.json" ]; then
	echo "cached: $VULNDB"
else
	mkdir -p "$CACHE/vulndb"
	src=$(cd "$CACHE" && GOFLAGS='' go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p') ||
		fail "go mod download golang.org/x/vulndb@$VULNDB_VERSION failed"
	[ -d "$src/data/osv" ] || fail "golang.org/x/vulndb@$VULNDB_VERSION has no data/osv (got dir '$src')"
	INDEXDB=$(tool indexdb golang.org/x/vulndb/cmd/indexdb "$VULNDB_VERSION") ||
		fail "go install golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION failed"
	tmp=$(mktemp -d "$CACHE/vulndb/.build.XXXXXX")
	if ! "$INDEXDB" -vulns "$src/data/osv" -out "$tmp/db"; then
		rm -rf "$tmp"
		fail "indexdb could not build the database from $src/data/osv"
	fi
	rm -rf "$VULNDB"
	mv "$tmp/db" "$VULNDB"
	rm -rf "$tmp"
	echo "built: $VULNDB ($(find "$VULNDB/ID" -name '*.json' | wc -l) entries)"
fi
end

begin govulncheck
"$GOVULNCHECK" -db "file://$VULNDB" ./... ||
	fail "govulncheck found vulnerabilities or could not run (database golang.org/x/vulndb@$VULNDB_VERSION)"
end

# --- tests ------------------------------------------------------------------

if [ "$LINT_ONLY" = 0 ]; then
	begin test
	export CUSAX_INTEGRATION=1
	"$GOTESTSUM" --format pkgname-and-test-fails --format-hide-empty-pkg -- \
		-race -count=1 -timeout 20m ./... || fail "go test failed (failures above)"
	end
fi

print_summary
printf '\n==> test.sh: PASS, every step passed (total %s)\n' "$(elapsed "$T0" "$(now)")"
