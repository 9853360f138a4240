#!/bin/sh
# install.sh installs the real servers the integration test rig starts
# (internal/testenv, scripts/rig/prosody.sh) and the tools it runs
# (promtool, for deploy/) from Debian 12 packages.
#
#	scripts/rig/install.sh            every rig package
#	scripts/rig/install.sh PKG...     only these (e.g. prosody prosody-modules)
#
# Run as root. Idempotent: when every package is already installed it does
# not touch apt at all. Package maintainer scripts are kept from starting
# system services (policy-rc.d exiting 101); anything started anyway is
# stopped again, so the rig owns every server process it talks to.
set -eu

# Debian 12 names. mod_privilege comes with prosody-modules (installed into
# /usr/lib/prosody/modules); kamailio's base package has every module the
# rig loads (tm, sl, rr, pv, maxfwd, usrloc, registrar, textops, siputils,
# sanity); sip-tester is SIPp; rtpengine-daemon runs in userspace without
# its kernel module; prometheus brings promtool, which checks and unit-tests
# deploy/prometheus/ (the Prometheus server it also ships is never started:
# see policy-rc.d below).
PKGS="prosody prosody-modules lua-unbound ejabberd redis-server sip-tester baresip kamailio rtpengine-daemon prometheus"
if [ $# -gt 0 ]; then
	PKGS="$*"
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install.sh: must run as root" >&2
	exit 1
fi

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "install.sh: all rig packages installed"
else
	created_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# added by cusax-gw scripts/rig/install.sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		created_policy=1
	fi
	cleanup() {
		if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	}
	trap cleanup EXIT
	export DEBIAN_FRONTEND=noninteractive
	echo "install.sh: installing:$missing"
	apt-get update
	# shellcheck disable=SC2086 # word splitting intended
	apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $missing
fi

# Stop whatever the packages left running. There may be no init system (a
# container), so go by the PID files the packages' init scripts use, and by
# the system config path on the command line; rig servers always run with
# their own configs in temp dirs and are never touched.
stop_pids() {
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
}

for f in /run/redis/redis-server.pid /run/prosody/prosody.pid /run/kamailio/kamailio.pid \
	/run/rtpengine/rtpengine-daemon.pid /run/rtpengine-daemon.pid /run/ejabberd/ejabberd.pid \
	/run/prometheus/prometheus.pid; do
	[ -s "$f" ] || continue
	pid=$(cat "$f")
	if [ -d "/proc/$pid" ]; then
		echo "install.sh: stopping system service from $f (pid $pid)"
		stop_pids "$pid"
	fi
	rm -f "$f"
done

# System instances started without a PID file: recognisable by the
# package's own config path.
for pid in $(pgrep -f '^/usr/bin/redis-server .*6379|/etc/prosody/prosody.cfg.lua|/etc/kamailio/kamailio.cfg|/etc/rtpengine/|/etc/ejabberd/ejabberd.yml' 2>/dev/null || true); do
	[ "$pid" = "$$" ] && continue
	echo "install.sh: stopping system daemon (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80))"
	stop_pids "$pid"
done

# ejabberd's postinst runs Erlang, which leaves the port mapper epmd
# listening on every address (port 4369). The rig needs no epmd (it runs
# ejabberd with ERL_DIST_PORT), so stop any epmd that listens beyond loopback.
if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -Eq '^(0\.0\.0\.0|\*|\[::\]):4369$'; then
	for pid in $(pgrep -x epmd 2>/dev/null || true); do
		echo "install.sh: stopping epmd listening on all addresses (pid $pid)"
		stop_pids "$pid"
	done
fi

echo "install.sh: done"
