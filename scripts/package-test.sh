#!/usr/bin/env bash
# package-test.sh DEB installs mqttgw's Debian package on this machine and
# checks it as a user would: the files are where the package says, `mqttgw
# version` and `mqttgw check /etc/mqttgw/config.toml` work, the man page
# renders, and systemd accepts the unit. It changes the machine (dpkg -i, a
# system user): `make test` runs it only when CI=true; locally use
# `make package-test`.
set -euo pipefail
deb=${1:?usage: package-test.sh DEB}
version=$(dpkg-deb --field "$deb" Version)

need=(dpkg dpkg-deb systemd-analyze man groff adduser)
missing=()
for t in "${need[@]}"; do
	command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t ]] || missing+=("$t")
done
if ((${#missing[@]} > 0)); then
	echo "package-test: missing ${missing[*]}; installing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends dpkg systemd man-db groff-base adduser
fi

contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/mqttgw ./etc/mqttgw/config.toml ./lib/systemd/system/mqttgw.service ./usr/share/man/man1/mqttgw.1.gz; do
	grep -q " $f\$" <<<"$contents" || { echo "package-test: $f not in $deb" >&2; exit 1; }
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/mqttgw/config.toml <<<"$conffiles" || { echo "package-test: /etc/mqttgw/config.toml is not a conffile" >&2; exit 1; }

dpkg -i "$deb"
got=$(mqttgw version)
[[ "$got" == "mqttgw $version "* ]] || { echo "package-test: mqttgw version says '$got', want 'mqttgw $version (GO VERSION)'" >&2; exit 1; }
mqttgw check /etc/mqttgw/config.toml
getent passwd mqttgw >/dev/null || { echo "package-test: no system user mqttgw" >&2; exit 1; }
# -ww: every groff warning; -z: no output, only the diagnostics.
warnings=$(zcat /usr/share/man/man1/mqttgw.1.gz | groff -man -ww -z 2>&1 || true)
[[ -z "$warnings" ]] || { echo "package-test: man page warnings:" >&2; echo "$warnings" >&2; exit 1; }
man -P cat mqttgw 2>/dev/null | grep -q 'mqttgw passwd' || { echo "package-test: man mqttgw lacks the passwd command" >&2; exit 1; }
out=$(systemd-analyze verify /lib/systemd/system/mqttgw.service 2>&1) || true
if [[ -n "$out" ]]; then
	echo "package-test: systemd-analyze verify:" >&2
	echo "$out" >&2
	exit 1
fi
echo "package-test: ok: $deb ($version)"
