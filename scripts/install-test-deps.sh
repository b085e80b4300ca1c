#!/usr/bin/env bash
# install-test-deps.sh installs the programs that mqttgw's integration tests
# run as real peers: the Mosquitto broker and its clients, and libcoap's
# CoAP clients. It is idempotent and non-interactive: when every tool is
# already present it installs nothing.
#
# Debian's mosquitto package enables a system service on port 1883. Tests
# never use it: internal/mosquittotest starts its own broker on a free
# loopback port with a generated config, so a running (or failed) system
# service does not matter.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# stdbuf (coreutils) makes mosquitto_sub line-buffer its stdout when piped;
# chromium loads the status page headless.
tools=(mosquitto mosquitto_sub mosquitto_pub mosquitto_passwd coap-client-notls coap-client-openssl stdbuf chromium)
packages=(mosquitto mosquitto-clients libcoap3-bin coreutils chromium)

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

missing=()
for t in "${tools[@]}"; do
	have "$t" || missing+=("$t")
done

if ((${#missing[@]} > 0)); then
	echo "install-test-deps: missing ${missing[*]}; installing ${packages[*]}" >&2
	sudo=()
	if [[ "$(id -u)" -ne 0 ]]; then
		if ! command -v sudo >/dev/null 2>&1; then
			echo "install-test-deps: not root and sudo not found; install ${packages[*]} by hand" >&2
			exit 1
		fi
		sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
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
echo "install-test-deps: ok: ${tools[*]}"
