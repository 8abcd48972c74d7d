#!/usr/bin/env bash
# Run webtron from a bundle that scripts/gpu-bundle.sh wrote (this file is that bundle's run.sh), on
# a Linux x86-64 GPU host with no Node: unpack once into WEBTRON_GPU_ROOT (default
# /tmp/webtron-gpu), find a Vulkan loader and driver, then
#
#   bash DIR/run.sh [bench]       webtron info, then the hardware benchmarks (below)
#   bash DIR/run.sh info          webtron info only
#   bash DIR/run.sh -- CMD ARGS   CMD inside the unpacked webtron, with its node first on PATH
#
# bench writes into OUT (default ./gpu-results): info.txt (with every tuner candidate's GFLOP/s),
# info.json and info-no-robustness.txt (the tuner's times with
# WEBTRON_DAWN_TOGGLES=disable_robustness); peak.jsonl, the arithmetic peak through WGSL (fp32 fma
# and, where offered, f16 subgroup matrices) by dispatch length, with and without Dawn's bounds
# checks; nn-float32.jsonl and nn-float16.jsonl, the matmuls with
# fp32 and fp16 weights at 1024^3, 4096^3 and GPT-2 small's shapes beside torch's GEMMs on CUDA;
# gpt.jsonl, GPT-2 small forward + backward in fp32 and bf16 beside torch CUDA (fp32, and bf16
# autocast); nn-toggles.jsonl, the fp32 GPT again with each of
# WEBTRON_DAWN_TOGGLES=disable_robustness, disable_workgroup_init and skip_validation, then all
# three (webtron only); nn-reductions.jsonl, the fp32 GPT with WEBTRON_REDUCTIONS=lane (one
# invocation per row or column, the CPU drivers' form) against gpt.jsonl's split; train.jsonl,
# `webtron train` at d = 1 on the gpu-medium GPT; decode.jsonl, webtron sample's decoder on GPT-2
# small (prefill, single steps on the few-rows and the block kernels) and its weight products of 1 to
# 8 rows on both; and log.txt, everything printed (with the SM clock
# through each step where nvidia-smi is). Each step has its own time limit (WEBTRON_GPU_STEP_S,
# default 180 s), so one that hangs leaves the others their time, and WEBTRON_GPU_TOTAL_S (default:
# none) bounds them all: a step gets at most what is left, and one with under 20 s left is skipped
# with a line. python3's torch on CUDA is the reference where the host has it. WEBTRON_GPU_QUICK=1
# runs small shapes: a check of the bundle on any adapter, lavapipe included.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=${WEBTRON_GPU_ROOT:-/tmp/webtron-gpu}
out=${OUT:-$PWD/gpu-results}
step_s=${WEBTRON_GPU_STEP_S:-180}
total_s=${WEBTRON_GPU_TOTAL_S:-}
say() { printf 'webtron gpu-run: %s\n' "$*" >&2; }

if [[ ! -x $root/bin/node || $here/webtron.tar.xz -nt $root/bin/node ]]; then
  say "unpacking into $root"
  rm -rf "$root" && mkdir -p "$root/bin" || exit 2
  xz -dc "$here/node.xz" > "$root/bin/node" && chmod +x "$root/bin/node" || exit 2
  xz -dc "$here/webtron.tar.xz" | tar -xf - -C "$root" || exit 2
fi
export PATH=$root/bin:$PATH

# Dawn opens libvulkan.so.1: the host's, else the bundle's loader. NVIDIA's Vulkan driver lives in
# libGLX_nvidia.so.0, which needs glvnd (libGLdispatch.so.0, libGLX.so.0 and kin): without them the
# loader reports "Could not get 'vkCreateInstance'" and finds no driver. Each unpacks beside webtron,
# not into /, when the host lacks it.
libs=$root/vulkan/usr/lib/x86_64-linux-gnu
unpack() { # LIBRARY DEB...: unpack the DEBs when the host has no LIBRARY
  ldconfig -p 2> /dev/null | grep -q "$1 " && return
  local deb
  for deb in "${@:2}"; do dpkg-deb -x "$here/$deb"_*.deb "$root/vulkan" || exit 2; done
  [[ :${LD_LIBRARY_PATH:-}: == *:$libs:* ]] || export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "$1: the bundle's (${*:2})"
}
unpack libvulkan.so.1 libvulkan1
unpack libGLdispatch.so.0 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2
# An NVIDIA driver mounted outside the loader's search path (containers) names its ICD file here.
icds=(/usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json)
if [[ -z ${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-} && ! -e ${icds[0]} && ! -e ${icds[1]} ]]; then
  for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
    if [[ -e $f ]]; then
      export VK_DRIVER_FILES=$f
      say "Vulkan driver: $f"
      break
    fi
  done
fi

cd "$root/webtron" || exit 2
mode=${1:-bench}
if [[ $mode == -- ]]; then
  shift
  exec "$@"
fi

mkdir -p "$out" || exit 2
log=$out/log.txt
: > "$log"
failed=0
# The SM clock through each step, read (never set) with nvidia-smi where the host has it: a GPU left
# at its idle clock (an H200 idles at 345 MHz of 1980) times several times slower.
clocks=$out/.clocks
: > "$clocks"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=clocks.sm --format=csv,noheader,nounits -lms 200 > "$clocks" 2> /dev/null &
  sampler=$!
  trap 'kill $sampler 2> /dev/null; rm -f "$clocks"' EXIT
fi
# clock_summary FROM: min, median and max SM MHz sampled since line FROM of the clock file.
clock_summary() {
  tail -n +"$(($1 + 1))" "$clocks" | grep -E '^[0-9]+$' | sort -n | awk '{v[NR] = $1} END {if (NR) printf "; SM clock %d / %d / %d MHz (min / median / max of %d samples)", v[1], v[int((NR + 1) / 2)], v[NR], NR}'
}
# run NAME FILE CMD...: CMD's stdout's JSON lines into FILE (the rest to the log), stderr to the log.
run() {
  local name=$1 file=$2 limit=$step_s
  shift 2
  if [[ -n $total_s ]]; then
    local left=$((total_s - SECONDS))
    if ((left < 20)); then
      say "$name: skipped, $left s left of WEBTRON_GPU_TOTAL_S=$total_s" 2>&1 | tee -a "$log" >&2
      failed=1
      return
    fi
    ((left < limit)) && limit=$left
  fi
  say "$name (at most $limit s): $*" 2>&1 | tee -a "$log" >&2
  local t0=$SECONDS from
  from=$(wc -l < "$clocks")
  timeout --kill-after=10 "$limit" "$@" > "$out/.stdout" 2> >(tee -a "$log" >&2)
  local rc=$?
  cat "$out/.stdout" >> "$log"
  if [[ -n $file ]]; then grep '^{' "$out/.stdout" > "$out/$file"; else cp "$out/.stdout" "$out/$name.txt"; fi
  rm -f "$out/.stdout"
  say "$name: exit $rc after $((SECONDS - t0)) s$(clock_summary "$from")" 2>&1 | tee -a "$log" >&2
  [[ $rc == 0 ]] || failed=1
}

python=$(command -v python3 || echo /usr/bin/python3)
torch_device=none
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null && torch_device=cuda
say "torch on CUDA: $([[ $torch_device == cuda ]] && echo "yes ($python)" || echo "no: webtron's rows only")" 2>&1 | tee -a "$log" >&2
run info '' node bin/webtron.js info --tuning
run info.json info.json node bin/webtron.js info --json
[[ $mode == info ]] && exit $failed
# The tuner again without Dawn's bounds checks: with them, Tint puts every subgroup-matrix load and
# store whose offset is not a constant behind a branch and a copy (its robustness transform predicates
# them), so each tensor-core candidate's time with and without says what that costs.
run info-no-robustness '' env WEBTRON_DAWN_TOGGLES=disable_robustness node bin/webtron.js info --tuning

# Each part on its own, so that one that fails (a product that checks wrong fails the bench) leaves
# the others' rows.
if [[ ${WEBTRON_GPU_QUICK:-} == 1 ]]; then
  shapes=256 config=tiny timing=(--runs 3 --warmup 1) train=(--config char-2x128 --iters 12 --window 4) durations=0.5,5
  decode=(--config tiny --prompt 4 --tokens 8)
else
  shapes=1024,4096,gpt config=gpt2-small timing=(--runs 10 --warmup 3) train=(--config gpu-medium --iters 40 --window 20)
  durations=0.5,5,50,200 decode=(--config gpt2-small --prompt 128)
fi
# The arithmetic peak through WGSL (fp32 fma; the tensor cores alone, and with the matmul's fragment
# loads) at dispatches of 0.5 to 200 ms, by timestamps and by wall clock: the ceiling each kernel below
# works under, and whether a long dispatch is timed slower than a short one. Then once more without
# Dawn's bounds checks (the peaks only: the GPT's cost of them is the toggles step's).
run peak peak.jsonl bash -c 'node dist/bench/run.js peak --json "$@" --product 1024 &&
  WEBTRON_DAWN_TOGGLES=disable_robustness node dist/bench/run.js peak --json "$@" --product 0' \
  peak --durations "$durations" --runs 3 --no-torch
# torch beside webtron on CUDA only: this bundle is for GPU hosts (and the CPU's torch is another bench).
torch=(--no-torch)
[[ $torch_device == cuda ]] && torch=(--python "$python" --torch-device cuda)
for dtype in float32 float16; do
  run "nn-$dtype" "nn-$dtype.jsonl" node dist/bench/run.js nn --json --matmul "$shapes" --matmul-dtypes "$dtype" \
    --config "$config" --no-gpt "${timing[@]}" "${torch[@]}"
done
run gpt gpt.jsonl node dist/bench/run.js nn --json --matmul none --config "$config" --gpt-precisions fp32,bf16 "${timing[@]}" "${torch[@]}"
# The fp32 GPT with the CPU drivers' reductions: what spreading the sums over the GPU gains here.
run reductions nn-reductions.jsonl env WEBTRON_REDUCTIONS=lane node dist/bench/run.js nn --json --matmul none --config "$config" \
  --gpt-precisions fp32 "${timing[@]}" --no-torch
# The fp32 GPT again with each Dawn toggle that trades a safety check for speed (bounds clamping,
# zeroing workgroup memory, API validation), then all three, webtron's rows only (each row names its
# toggles): what each check costs here.
toggle_sets='disable_robustness disable_workgroup_init skip_validation disable_robustness,disable_workgroup_init,skip_validation'
run toggles nn-toggles.jsonl bash -c 'for t in $0; do WEBTRON_DAWN_TOGGLES=$t node dist/bench/run.js nn --json --matmul none "$@" || exit; done' \
  "$toggle_sets" --config "$config" --gpt-precisions fp32 "${timing[@]}" --no-torch
run train train.jsonl node dist/bench/run.js train --json "${train[@]}" --worlds 1 --variants plain --no-torch
# webtron sample's decoder: prefill and single steps, the steps on the few-rows kernel beside the
# block kernel, then each GPT weight product of 1 to 8 rows on both (the GPU's few-rows limit is 8).
run decode decode.jsonl bash -c 'node dist/bench/run.js decode --json "$@" && node dist/bench/run.js decode-products --json' \
  decode "${decode[@]}"
exit $failed
