#!/bin/sh
# prerm: stop the service before its binary goes away.
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	systemctl stop mqttgw.service || true
	systemctl disable mqttgw.service >/dev/null || true
fi
exit 0
