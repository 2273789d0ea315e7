#!/usr/bin/env bash
# Install the Debian packages of bench/debian-packages.txt that are missing (nginx-light, wrk,
# h2load, gcc, libc6-dev and NGINX's stream module): `apt-get update`, then
# `apt-get install --no-install-recommends`.
# Needs root or sudo.
# The harness runs NGINX only with its own config (-c/-p, daemon off); installing nginx-light
# must not leave Debian's nginx service running on port 80, so service starts are refused
# during the install (policy-rc.d, when none exists) and a service that started anyway is
# stopped with Debian's own config.
set -euo pipefail
cd "$(dirname "$0")/../.."
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' bench/debian-packages.txt)
missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages for the benchmark: ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary: bench/harness/install-debian-packages.sh\nexit 101\n' \
    | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  made_policy=yes
fi
cleanup() { [ -z "$made_policy" ] || $sudo rm -f "$policy"; }
trap cleanup EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [ -s /run/nginx.pid ]; then
  echo "stopping the nginx service the package started (port 80)" >&2
  $sudo nginx -s quit 2>/dev/null || true
fi
