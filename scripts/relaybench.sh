#!/bin/sh
# relaybench.sh runs the media relay benchmark (bench/relaybench): our relay,
# both engines, against rtpengine in userspace mode, side by side in one run.
#
#	scripts/relaybench.sh                 3 runs of 200, 1,000 and 2,000 streams (50 packets/s each)
#	scripts/relaybench.sh -quick          seconds, to check that it works
#	scripts/relaybench.sh -idle-below 0.3 wait for a quiet machine before each measurement
#
# Every flag goes to the harness (go run ./bench/relaybench -h lists them).
# rtpengine-daemon comes from scripts/rig/install.sh (as root; when it is
# already installed nothing is touched). The output is also kept in
# relaybench-<UTC time>.txt under ${TMPDIR:-/tmp}; the last line is
# relay_cpu_per_packet_ratio_vs_rtpengine=R.
set -eu
cd "$(dirname "$0")/.."

if ! command -v rtpengine >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		sh scripts/rig/install.sh rtpengine-daemon
	else
		echo "relaybench.sh: rtpengine not installed; run as root or: sudo sh scripts/rig/install.sh rtpengine-daemon" >&2
		exit 1
	fi
fi

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH=/usr/local/go/bin:$PATH
fi
bin=$(mktemp -d "${TMPDIR:-/tmp}/relaybench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/relaybench" ./bench/relaybench
out="${TMPDIR:-/tmp}/relaybench-$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "relaybench.sh: output also in $out" >&2
"$bin/relaybench" "$@" | tee "$out"
