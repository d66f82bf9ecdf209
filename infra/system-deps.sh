#!/usr/bin/env bash
# Installs the system tools gigapulse needs when they are missing: a Java runtime and Maven (Kafka from
# Maven Central), Debian's docker-compose (the test suite validates docker-compose.yml with it) and
# Mosquitto (the MQTT bridge's tests start one on a free loopback port).
# Uses apt-get when run as root on Debian/Ubuntu; otherwise says in one line what to install.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
