#!/bin/sh
# mkconfig.sh EXAMPLE > config.toml: the packaged /etc/mqttgw/config.toml, made
# from config.toml.example so the two cannot drift: the same listeners, rules
# and classes on loopback, pointed at a local Mosquitto instead of the embedded
# broker.
set -eu
awk '
NR == 1 { print "# mqttgw configuration installed by the Debian package: devices on loopback,"
          print "# the broker is the local Mosquitto at tcp://127.0.0.1:1883. Edit, then"
          print "# `mqttgw check /etc/mqttgw/config.toml` and `systemctl reload mqttgw`."
          skip = 1; next }
skip && /^#/ { next }
{ skip = 0 }
/^# "embedded" runs/ { print "# The local Mosquitto; add username/password when it asks for them, or use"; next }
/^# To use your Mosquitto/ { print "# url = \"ssl://host:8883\" with [upstream.tls] ca_file for a remote one."; next }
/^# with \[upstream.tls\]/ { next }
/^url = "embedded"/ { print "url = \"tcp://127.0.0.1:1883\""; next }
/^\[upstream.embedded\]/ { drop = 1; next }
drop { if ($0 == "") drop = 0; next }
{ print }
' "$1"
