#!/bin/sh
# postrm: purge removes the state directory and the system user.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = "purge" ]; then
	rm -rf /var/lib/mqttgw
	if getent passwd mqttgw >/dev/null; then
		deluser --system mqttgw >/dev/null || true
	fi
fi
exit 0
