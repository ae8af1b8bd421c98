#!/usr/bin/env bash
# install.sh: install the Debian 12 packages the build, the tests and the local
# services need. Idempotent: does nothing when everything is already there.
set -euo pipefail

packages=(
  build-essential cmake pkg-config curl ca-certificates procps clang-format openssl
  protobuf-c-compiler libprotobuf-c-dev
  librabbitmq-dev libpq-dev libhiredis-dev libmicrohttpd-dev libssl-dev
  libcmocka-dev libjansson-dev libsodium-dev
  postgresql rabbitmq-server redis-server
  jq prometheus yamllint
  clang libclang-rt-14-dev
)
# prometheus is there for promtool (deploy/monitoring/check.sh checks the
# alert rules and the scrape config with it); install.sh does not start its
# server, like the other services' (see policy-rc.d below). yamllint checks
# the deployment files (tests/deploy/check.sh). clang builds the libFuzzer
# targets (tests/fuzz/run.sh); its -fsanitize=fuzzer runtime is in
# libclang-rt-14-dev, which clang only recommends, so it is named too.

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$p")
done
# The contract tooling (tools/node) needs Node.js 18 or later with npm:
# Debian 12's nodejs and npm will do, and so will any node and npm already
# on PATH (installing Debian's npm beside another nodejs would conflict).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi

echo "install: installing ${missing[*]}"
# The packaged services must not start system-wide copies of themselves: the
# project runs its own instances under .local/. policy-rc.d (exit 101) tells
# invoke-rc.d not to start anything; it is removed again afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
trap '[ $own_policy -eq 1 ] && rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
