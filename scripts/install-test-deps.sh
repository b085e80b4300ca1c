#!/usr/bin/env bash
# install-test-deps.sh installs the programs that mqttgw's integration tests
# run as real peers: the Mosquitto broker and its clients, and libcoap's
# CoAP clients. It is idempotent and non-interactive: when every tool is
# already present it installs nothing.
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
tools=(mosquitto mosquitto_sub mosquitto_pub mosquitto_passwd coap-client-notls coap-client-openssl stdbuf chromium zsh groff)
packages=(mosquitto mosquitto-clients libcoap3-bin coreutils chromium zsh groff-base)

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
if ((${#still[@]} > 0)); then
	echo "install-test-deps: still missing after install: ${still[*]} (packages: ${packages[*]})" >&2
	exit 1
fi
# The system broker must not hold the example's port 1883 (see above).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
	"${sudo[@]}" systemctl disable --now mosquitto || true
fi
if [[ -f /run/mosquitto/mosquitto.pid ]]; then
	"${sudo[@]}" kill "$(cat /run/mosquitto/mosquitto.pid)" 2>/dev/null || true
fi
echo "install-test-deps: ok: ${tools[*]}"
