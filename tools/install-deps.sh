#!/usr/bin/env bash
# install-deps.sh — the Debian 12 packages ringmail needs to build, run and test.
# Called by both README commands; safe to run again (apt-get skips what is installed).
set -euo pipefail
pkgs=(build-essential cmake pkg-config liburing-dev libwolfssl-dev libssl-dev libudns-dev libmimalloc-dev
      googletest libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev)
if [ "${1:-}" = test ]; then
    pkgs+=(python3 python3-pytest python3-aiosmtpd swaks libnet-ssleay-perl libauthen-sasl-perl
           postfix dnsmasq openssl clang-format iproute2 python3-dkim python3-nacl
           clang-14 libclang-rt-14-dev llvm-14
           systemd lintian prometheus)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
# postfix asks a question on install; the tests only use its smtp-source/smtp-sink and,
# in benchmarks, a loopback-only instance.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
