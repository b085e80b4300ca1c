#!/bin/sh
# postinst: the service runs as the system user mqttgw, which may read its
# config; systemd starts it when systemd is the running init (not in a
# container build).
set -e
if [ "$1" = "configure" ]; then
	if ! getent passwd mqttgw >/dev/null; then
		adduser --system --group --quiet --no-create-home --home /nonexistent mqttgw
	fi
	chgrp mqttgw /etc/mqttgw/config.toml
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		systemctl enable mqttgw.service >/dev/null
		systemctl restart mqttgw.service || echo "mqttgw: the service did not start; see journalctl -u mqttgw" >&2
	fi
fi
exit 0
