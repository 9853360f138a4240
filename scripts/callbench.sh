#!/bin/sh
# callbench.sh runs the calls-per-second benchmark (bench/callbench): SIPp
# to SIPp directly, SIPp through cusax-gw, and SIPp through Kamailio with
# rtpengine, side by side in one run, with 1-second calls and media
# anchored.
#
#	scripts/callbench.sh                  3 runs of 1,000..3,000 calls/s, 15 s per rate
#	scripts/callbench.sh -quick           seconds, to check that it works
#	scripts/callbench.sh -idle-below 0.3  wait for a quiet machine before each measurement
#
# Every flag goes to the harness (go run ./bench/callbench -h lists them).
# SIPp (sip-tester), Kamailio and rtpengine-daemon come from
# scripts/rig/install.sh (as root; when they are already installed nothing
# is touched). The gateway is built from ./cmd/cusax-gw. The output is also
# kept in callbench-<UTC time>.txt under ${TMPDIR:-/tmp}; the last line is
# gateway_max_cps=N kamailio_rtpengine_max_cps=M sipp_direct_max_cps=D.
set -eu
cd "$(dirname "$0")/.."

missing=""
command -v sipp >/dev/null 2>&1 || missing="$missing sip-tester"
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing="$missing kamailio"
command -v rtpengine >/dev/null 2>&1 || missing="$missing rtpengine-daemon"
if [ -n "$missing" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		# shellcheck disable=SC2086 # one argument per package
		sh scripts/rig/install.sh $missing
	else
		echo "callbench.sh: missing:$missing; run as root or: sudo sh scripts/rig/install.sh$missing" >&2
		exit 1
	fi
fi
PATH=$PATH:/usr/sbin

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH=/usr/local/go/bin:$PATH
fi
bin=$(mktemp -d "${TMPDIR:-/tmp}/callbench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/callbench" ./bench/callbench
go build -o "$bin/cusax-gw" ./cmd/cusax-gw
out="${TMPDIR:-/tmp}/callbench-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "callbench.sh: output also in $out" >&2
"$bin/callbench" -gateway "$bin/cusax-gw" "$@" | tee "$out"
