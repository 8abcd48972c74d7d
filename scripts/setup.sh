#!/usr/bin/env bash
# One set-up step for both README commands. Idempotent and quick when already done:
#   1. npm dependencies (npm ci when the lockfile changed since the last install),
#   2. the TypeScript build (when a source is newer than the last build),
#   3. a WebGPU adapter: if Dawn finds none on Linux and apt is usable as root, install Mesa's
#      lavapipe (software Vulkan) from Debian backports; otherwise say exactly what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'webtron setup: %s\n' "$*" >&2; }

# --- 1. npm dependencies -------------------------------------------------------------------------
stamp=node_modules/.webtron-install-stamp
lock_hash=$(sha256sum package.json package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
  say "installing npm dependencies"
  # npm 11 honours package.json's allowScripts; older npm skips onnxruntime-node's CUDA download by this.
  export ONNXRUNTIME_NODE_INSTALL=skip
  if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
  echo "$lock_hash" > "$stamp"
fi

# --- 2. build ------------------------------------------------------------------------------------
if [[ ! -f dist/.build-stamp ]] || [[ -n $(find src bench test scripts examples tsconfig.json package.json -newer dist/.build-stamp \( -name '*.ts' -o -name '*.json' -o -name '*.mjs' \) -print -quit) ]]; then
  say "building TypeScript and the browser worker's bundle"
  npx tsc -p tsconfig.json
  node scripts/build-browser.mjs
  touch dist/.build-stamp
fi

# --- 3. a WebGPU adapter ---------------------------------------------------------------------------
# Dawn's two start-up notices about limits it lowers are not news (bin/webtron.js drops them too).
probe() { node dist/scripts/probe-adapter.js 2>&1 | { grep -Ev '^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced' || true; } >&2; }

if probe; then exit 0; fi

if [[ $(uname -s) != Linux ]]; then
  say "no WebGPU adapter found. Update your GPU driver (Metal on macOS, D3D12 on Windows) and retry."
  exit 1
fi

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
manual="install a Vulkan driver and loader, e.g. on Debian/Ubuntu as root: apt-get install mesa-vulkan-drivers libvulkan1 (Mesa >= 25 for the software lavapipe; on Debian 12 from bookworm-backports: apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1)"
if [[ $(id -u) != 0 ]] || ! command -v apt-get > /dev/null; then
  say "no WebGPU adapter found and cannot install one here (needs root and apt). To fix: $manual"
  exit 1
fi

say "no WebGPU adapter found: installing Mesa's lavapipe (software Vulkan) with apt"
export DEBIAN_FRONTEND=noninteractive
target=()
if [[ $codename == bookworm ]]; then
  # Debian 12's Mesa 22 lavapipe gives Dawn no adapter; backports carries Mesa 25. The backports
  # source takes the mirror and key of the machine's own Debian source (and says what it added).
  node dist/scripts/backports-source.js bookworm || exit 1
  target=(-t bookworm-backports)
fi
apt-get update -qq >&2
apt-get install -y -qq "${target[@]}" mesa-vulkan-drivers libvulkan1 >&2

if probe; then exit 0; fi
say "Mesa's lavapipe is installed but Dawn still finds no adapter. To fix: $manual"
exit 1
