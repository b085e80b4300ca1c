#!/usr/bin/env bash
# install-test-deps.sh installs the programs that mqttgw's integration tests
# run as real peers: the Mosquitto broker and its clients, libcoap's CoAP
# clients, and nats-server (a JetStream cluster for the NATS store). It is
# idempotent and non-interactive: when every tool is already present it
# installs nothing.
#
# Debian's mosquitto package enables a system service on port 1883. The
# integration tests never use it (internal/mosquittotest starts its own broker
# on a free loopback port), but the README test runs the example config,
# whose embedded broker needs 1883: the service is stopped and disabled.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# stdbuf (coreutils) makes mosquitto_sub line-buffer its stdout when piped;
# chromium loads the status page headless.
# zsh and groff check the completion script and the man page.
# nginx with its stream module is the UDP load balancer in front of a fleet
# (internal/nginxtest).
tools=(mosquitto mosquitto_sub mosquitto_pub mosquitto_passwd coap-client-notls coap-client-openssl stdbuf chromium zsh groff nginx)
packages=(mosquitto mosquitto-clients libcoap3-bin coreutils chromium zsh groff-base nginx-light libnginx-mod-stream)
# Files a tool needs beside its program (nginx's stream module).
files=(/usr/lib/nginx/modules/ngx_stream_module.so)

# have NAME reports whether NAME is runnable. mosquitto lives in /usr/sbin,
# which is not on a non-root user's PATH on Debian.
have() {
	command -v "$1" >/dev/null 2>&1 && return 0
	local d
	for d in /usr/sbin /usr/local/sbin /sbin; do
		[[ -x "$d/$1" ]] && return 0
	done
	return 1
}

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
	sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
fi

missing=()
for t in "${tools[@]}"; do
	have "$t" || missing+=("$t")
done
for f in "${files[@]}"; do
	[[ -e "$f" ]] || missing+=("$f")
done

if ((${#missing[@]} > 0)); then
	echo "install-test-deps: missing ${missing[*]}; installing ${packages[*]}" >&2
	if [[ "$(id -u)" -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
		echo "install-test-deps: not root and sudo not found; install ${packages[*]} by hand" >&2
		exit 1
	fi
	"${sudo[@]}" apt-get update
	"${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"
fi

still=()
for t in "${tools[@]}"; do
	have "$t" || still+=("$t")
done
for f in "${files[@]}"; do
	[[ -e "$f" ]] || still+=("$f")
done
if ((${#still[@]} > 0)); then
	echo "install-test-deps: still missing after install: ${still[*]} (packages: ${packages[*]})" >&2
	exit 1
fi
# The system broker must not hold the example's port 1883 (see above); the
# tests start their own nginx, so Debian's service (port 80) is not needed.
for svc in mosquitto nginx; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		"${sudo[@]}" systemctl disable --now "$svc" || true
	fi
done
for pidfile in /run/mosquitto/mosquitto.pid /run/nginx.pid; do
	if [[ -f "$pidfile" ]]; then
		"${sudo[@]}" kill "$(cat "$pidfile")" 2>/dev/null || true
	fi
done

# nats-server for store/natsstore's tests (internal/natstest starts a
# three-node JetStream cluster). They need 2.12 or newer: atomic batch
# publishing (State.Apply) came in 2.12, per-message TTLs in 2.11. Debian 12's
# nats-server package is 2.9.10, which has neither and silently ignores both
# stream settings, so instead of that package the server is built from its Go
# module (fetched like any Go dependency) and installed as
# /usr/local/bin/nats-server. GOTOOLCHAIN=local: the module asks for a newer
# patch toolchain than it needs, and none is downloaded here.
NATS_SERVER_MODULE=github.com/nats-io/nats-server/v2
NATS_SERVER_VERSION=v2.15.3
NATS_SERVER_MIN=2.12.0

# nats_version PATH prints the version of the nats-server at PATH, or nothing.
nats_version() {
	"$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1
}

# nats_new_enough VERSION reports whether VERSION >= NATS_SERVER_MIN.
nats_new_enough() {
	[[ -n "$1" ]] && [[ "$(printf '%s\n%s\n' "$NATS_SERVER_MIN" "$1" | sort -V | head -n1)" == "$NATS_SERVER_MIN" ]]
}

nats_found=""
for p in "$(command -v nats-server || true)" /usr/local/bin/nats-server /usr/sbin/nats-server; do
	[[ -n "$p" && -x "$p" ]] || continue
	v=$(nats_version "$p")
	if nats_new_enough "$v"; then
		nats_found="$p ($v)"
		break
	fi
done
if [[ -z "$nats_found" ]]; then
	echo "install-test-deps: no nats-server >= $NATS_SERVER_MIN; building $NATS_SERVER_MODULE@$NATS_SERVER_VERSION" >&2
	command -v go >/dev/null 2>&1 || { echo "install-test-deps: go not found: needed to build nats-server" >&2; exit 1; }
	gobin=$(mktemp -d)
	trap 'rm -rf "$gobin"' EXIT
	(cd / && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$gobin" \
		go install "$NATS_SERVER_MODULE@$NATS_SERVER_VERSION")
	sudo=()
	if [[ "$(id -u)" -ne 0 ]]; then
		sudo=(sudo -n)
	fi
	"${sudo[@]}" install -m 0755 "$gobin/nats-server" /usr/local/bin/nats-server
	v=$(nats_version /usr/local/bin/nats-server)
	nats_new_enough "$v" || { echo "install-test-deps: built nats-server reports version '$v'" >&2; exit 1; }
	nats_found="/usr/local/bin/nats-server ($v)"
fi
echo "install-test-deps: ok: ${tools[*]} nats-server=$nats_found"
