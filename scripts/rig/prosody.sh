#!/usr/bin/env bash
# prosody.sh starts and stops a throw-away Prosody for demos and manual
# tests, with exactly the configuration of internal/testenv's StartProsody
# (testenv.ProsodyConfig, printed by scripts/rig/prosodycfg; needs Go):
# every listener on 127.0.0.1, no s2s/HTTP, PEP + vcard4 + vcard_legacy, and
# the cusax-gw component with the XEP-0356 privileges it asks for
# (mod_privilege).
#
#	scripts/rig/prosody.sh start DIR
#	scripts/rig/prosody.sh stop DIR
#
# start reads (defaults in brackets):
#	DOMAIN          VirtualHost                      [localhost]
#	COMPONENT       component domain                 [cusax.$DOMAIN]
#	SECRET_FILE     file holding the component secret, or
#	SECRET          the secret itself (never put on any command line)
#	C2S_PORT        client port on 127.0.0.1         [5222]
#	COMPONENT_PORT  component port on 127.0.0.1      [5347]
#	USERS           "alice:pw bob:pw" registered before start (passwords
#	                go to prosodyctl on stdin, not on its command line)
# It writes DIR/prosody.cfg.lua (mode 0600), DIR/data, DIR/prosody.log and
# DIR/prosody.pid, and returns once both ports accept connections.
# stop sends SIGTERM to the PID in DIR/prosody.pid (SIGKILL after 5 s).
#
# Plain-text c2s with SASL PLAIN is allowed so that an XMPP client on this
# machine (Gajim, Dino, profanity, a Go test) can log in without TLS: that
# is acceptable only because every listener is bound to 127.0.0.1.
set -euo pipefail

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd)

stop() {
	local pidfile=$dir/prosody.pid pid i
	[ -s "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "prosody.sh: pid $pid ignored SIGTERM for 5 s, killing" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
}

# port_open PORT: does 127.0.0.1:PORT accept a TCP connection?
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	local domain=${DOMAIN:-localhost}
	local component=${COMPONENT:-cusax.$domain}
	local c2s_port=${C2S_PORT:-5222}
	local component_port=${COMPONENT_PORT:-5347}
	local secret
	if [ -n "${SECRET_FILE:-}" ]; then
		secret=$(<"$SECRET_FILE")
	elif [ -n "${SECRET:-}" ]; then
		secret=$SECRET
	else
		echo "prosody.sh: set SECRET_FILE (or SECRET) to the component secret" >&2
		exit 2
	fi
	case $secret in *$'\n'*)
		echo "prosody.sh: the secret must be one line" >&2
		exit 2
		;;
	esac
	command -v prosody >/dev/null && command -v prosodyctl >/dev/null || {
		echo "prosody.sh: prosody not installed; run scripts/rig/install.sh as root" >&2
		exit 1
	}

	if [ -s "$dir/prosody.pid" ] && kill -0 "$(cat "$dir/prosody.pid")" 2>/dev/null; then
		echo "prosody.sh: already running (pid $(cat "$dir/prosody.pid")); stop it first" >&2
		exit 1
	fi
	for port in "$c2s_port" "$component_port"; do
		if port_open "$port"; then
			echo "prosody.sh: 127.0.0.1:$port is already in use" >&2
			exit 1
		fi
	done

	mkdir -p "$dir/data" "$dir/certs"
	chmod 0700 "$dir" "$dir/data"
	dir=$(cd "$dir" && pwd)
	local cfg=$dir/prosody.cfg.lua
	# The configuration is the test rig's own (testenv.ProsodyConfig), so the
	# demo runs the Prosody the tests run against. The secret goes through
	# stdin, never a command line.
	(
		umask 077
		cd "$REPO"
		printf '%s\n' "$secret" |
			go run ./scripts/rig/prosodycfg -dir "$dir" -domain "$domain" -component "$component" \
				-c2s-port "$c2s_port" -component-port "$component_port" >"$cfg"
	) || {
		echo "prosody.sh: could not generate $cfg (go run ./scripts/rig/prosodycfg failed)" >&2
		exit 1
	}

	local entry user pw
	for entry in ${USERS:-}; do
		user=${entry%%:*}
		pw=${entry#*:}
		if [ -z "$user" ] || [ "$user" = "$entry" ]; then
			echo "prosody.sh: USERS entry '$user' is not user:password" >&2
			exit 2
		fi
		# prosodyctl reads the password (and its confirmation) from stdin.
		printf '%s\n%s\n' "$pw" "$pw" |
			prosodyctl --config "$cfg" adduser "$user@$domain" >>"$dir/prosodyctl.log" 2>&1 || {
			echo "prosody.sh: registering $user@$domain failed; see $dir/prosodyctl.log" >&2
			exit 1
		}
	done

	# setsid: Prosody outlives this script and ignores the caller's Ctrl-C;
	# stop it with "prosody.sh stop DIR".
	setsid prosody --config "$cfg" -F >>"$dir/prosody.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid" >"$dir/prosody.pid"

	local i
	for i in $(seq 1 150); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "prosody.sh: prosody exited during start; log:" >&2
			tail -n 20 "$dir/prosody.log" >&2
			rm -f "$dir/prosody.pid"
			exit 1
		fi
		if port_open "$c2s_port" && port_open "$component_port"; then
			echo "prosody.sh: prosody (pid $pid) on 127.0.0.1:$c2s_port (c2s) and 127.0.0.1:$component_port (component $component)"
			return 0
		fi
		sleep 0.1
	done
	echo "prosody.sh: prosody did not listen within 15 s; log:" >&2
	tail -n 20 "$dir/prosody.log" >&2
	stop
	exit 1
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
