#!/usr/bin/env bash
# Set-up for the benchmarks' references, after scripts/setup.sh: Debian's python3-torch (with numpy)
# and an optimized BLAS for it. Debian builds torch against the generic BLAS interface, so without
# libopenblas0-pthread torch runs netlib's reference BLAS, about 60x slower, and every comparison
# against it would flatter webtron. Installed with apt when it is missing and we run as root;
# otherwise the line to run is printed and the benchmarks that need torch say what is missing.
set -euo pipefail

say() { printf 'webtron bench setup: %s\n' "$*" >&2; }

python=/usr/bin/python3
need=()
[[ -x $python ]] && "$python" -c 'import torch' 2> /dev/null || need+=(python3-torch python3-numpy)
# Debian's optimized BLAS for the generic interface: with it, libblas.so.3 resolves to OpenBLAS.
dpkg-query -W -f='${Status}' libopenblas0-pthread 2> /dev/null | grep -q 'ok installed' || need+=(libopenblas0-pthread)
[[ ${#need[@]} -eq 0 ]] && exit 0

line="apt-get install ${need[*]}"
if [[ $(id -u) != 0 ]] || ! command -v apt-get > /dev/null; then
  say "the torch references need: $line (as root); benchmarks that compare with torch will say so"
  exit 0
fi
say "installing the torch references: $line"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
