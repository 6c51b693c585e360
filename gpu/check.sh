#!/usr/bin/env bash
# Runs the project's XLA-CUDA checks and the transformer comparison on a machine with an NVIDIA GPU
# and JAX's CUDA PJRT plugin (pip package jax-cuda13-pjrt or jax-cuda12-pjrt), from what
# gpu/bundle.sh built: no Go toolchain is needed there.
#
#	gpu/check.sh BUNDLE_DIR OUT_DIR [SECONDS]
#
# Each step has a time limit and the whole run a budget (default 480 s): a step that would start
# with too little time left is skipped and says so. GRADSUB_GPU_STEPS (a regular expression of
# step names, e.g. 'xla-sanity|transformer-default'; the last four, transformer-large-auto,
# temporal-command-buffers, data-parallel and transformer-scaling, rarely fit the default budget
# after the others) runs some steps only. Logs, tables and pictures go to OUT_DIR; the
# step summaries to stdout.
set -uo pipefail
bundle=$(realpath "$1")
out=$(realpath -m "$2")
budget=${3:-480}
# GRADSUB_GPU_BACKEND=go runs the same steps on the Go backend: a dry run of this script anywhere.
backend=${GRADSUB_GPU_BACKEND:-xla:cuda}
mkdir -p "$out" /tmp/gradsub-gpu/bin
start=$SECONDS
log="$out/log.txt"
say() { echo "$@" | tee -a "$log"; }

# step NAME LIMIT CMD...: runs CMD with a time limit, its output appended to the log.
step() {
  local name=$1 limit=$2
  shift 2
  [[ $name =~ ^(${GRADSUB_GPU_STEPS:-.*})$ ]] || return 0
  local left=$((budget - (SECONDS - start)))
  if ((left < 25)); then
    say "## $name: skipped, ${left}s of the budget left"
    return
  fi
  ((limit > left - 5)) && limit=$((left - 5))
  say "## $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$out/step.log" 2>&1
  local rc=$?
  cat "$out/step.log" >>"$log"
  grep -E '^(--- |=== RUN|ok|FAIL|PASS|\| |Benchmark|backend|panic|Ratios)' "$out/step.log" | grep -v '^=== RUN' | tail -n 40
  ((rc != 0)) && tail -n 15 "$out/step.log"
  say "## $name: exit $rc after $((SECONDS - t0))s"
  rm -f "$out/step.log"
}

say "## device"
[[ $backend == xla:cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$log"

# The PJRT plugin: go-xla loads pjrt_c_api_<name>_plugin.so from PJRT_PLUGIN_LIBRARY_PATH; JAX's
# package names it xla_cuda_plugin.so and keeps the CUDA libraries in site-packages/nvidia.
setup_cuda_plugin() {
  local plugin site libdevice
  plugin=$(python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os
for name in ("jax_plugins.xla_cuda13", "jax_plugins.xla_cuda12"):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        continue
    for d in (spec.submodule_search_locations or []) if spec else []:
        for f in sorted(glob.glob(os.path.join(d, "*plugin*.so"))):
            print(f)
            raise SystemExit
PY
  )
  if [[ -z "$plugin" ]]; then
    plugin=$(find / -name 'xla_cuda_plugin.so' -path '*jax_plugins*' 2>/dev/null | head -n 1)
  fi
  if [[ -z "$plugin" ]]; then
    say "no CUDA PJRT plugin found (pip package jax-cuda13-pjrt): nothing to check"
    exit 1
  fi
  site=$(dirname "$(dirname "$(dirname "$plugin")")")
  mkdir -p /tmp/gradsub-gpu/pjrt
  ln -sf "$plugin" /tmp/gradsub-gpu/pjrt/pjrt_c_api_cuda_plugin.so
  ln -sfn "$site/nvidia" /tmp/gradsub-gpu/nvidia # go-xla looks for ../nvidia beside the plugin
  export PJRT_PLUGIN_LIBRARY_PATH=/tmp/gradsub-gpu/pjrt
  LD_LIBRARY_PATH=$(find "$site/nvidia" -type d -name lib 2>/dev/null | paste -sd:):${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH
  libdevice=$(find "$site/nvidia" /usr/local/cuda* -name 'libdevice.10.bc' 2>/dev/null | head -n 1)
  if [[ -n "$libdevice" ]]; then
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_cuda_data_dir=$(dirname "$(dirname "$(dirname "$libdevice")")")"
  fi
  export PATH=$PATH:/usr/local/cuda/bin
  say "plugin $plugin; XLA_FLAGS=${XLA_FLAGS:-}"
}
[[ $backend == xla:cuda ]] && setup_cuda_plugin

# The binaries, and the Go source the transformer reads, at the GOROOT path they were built with.
for f in "$bundle"/bin/*.gz; do
  gunzip -c "$f" >"/tmp/gradsub-gpu/bin/$(basename "$f" .gz)"
done
chmod +x /tmp/gradsub-gpu/bin/*
bin=/tmp/gradsub-gpu/bin
goroot=$(cat "$bundle/goroot")
mkdir -p "$goroot/src"
tar -xzf "$bundle/goroot-src.tar.gz" -C "$goroot/src"
export GOROOT=$goroot # transformer.GoRoot() asks 'go env GOROOT', else the runtime: both honour it

# 1. XLA on CUDA at all: a small MLP trained with the projector (hooks' backend test).
step xla-sanity 60 "$bin/hooks.test" -test.run '^TestEveryBackend$' -test.v

# 2. The transformer comparison: stock AdamW against the projector wrapping it, in matrix and
# temporal mode, at the default size; then AdamW against matrix mode on a larger model. The corpus
# is the default one (the Go source under the GOROOT path above). XLA's default on CUDA, TF32
# products, applies to every variant alike.
step transformer-default 200 "$bin/transformer" -backend "$backend" -q -rank 8 -variants adamw,subspace-matrix,subspace-temporal \
  -out "$out/default" -json "$out/default/rows.json"
step transformer-large 160 "$bin/transformer" -backend "$backend" -q -rank 8 -variants adamw,subspace-matrix \
  -width 1024 -depth 4 -heads 16 -mlp 4096 -seq 256 -batch 16 -steps 200 \
  -out "$out/large" -json "$out/large/rows.json"

# 3. The tests that run on any backend, in full float32 (tf32=false: their tolerances are float32's).
if [[ $backend == xla:cuda ]]; then
  export GOMLX_BACKEND="xla:cuda,tf32=false"
else
  export GOMLX_BACKEND=$backend
fi
step tests-hooks 60 "$bin/hooks.test" -test.v -test.run 'TestDirect|TestMatrix|TestBadSteps|TestCheckpoint|TestAdaptiveRank|TestTemporalUpdate|TestStepGraphCaptures'
step tests-transformer 60 "$bin/transformer.test" -test.v -test.run 'TestEveryProjectionTakesTheDirectPath|TestModelLearnsBelowUnigramEntropy'
step tests-projector 45 "$bin/projector.test" -test.v
step tests-step 30 "$bin/step.test" -test.v # the step's rules and stacking helpers on the device

# 4. What a user gets on the large model: the one option (-rank 0, the automatic rank: 192 on its
# 1024-wide matrices at 4,096 rows a step), against AdamW.
step transformer-large-auto 160 "$bin/transformer" -backend "$backend" -q -rank 0 -variants adamw,subspace-matrix \
  -width 1024 -depth 4 -heads 16 -mlp 4096 -seq 256 -batch 16 -steps 200 \
  -out "$out/large-auto" -json "$out/large-auto/rows.json"

# 5. Temporal mode keeps a gated eigen-solve (a While); XLA's command buffers (CUDA graphs) leave
# WHILE and CONDITIONAL out by default. The same comparison with them let in (issue 11 asks for it).
[[ $backend == xla:cuda ]] && export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
step temporal-command-buffers 120 "$bin/transformer" -backend "$backend" -q -rank 8 -variants adamw,subspace-temporal \
  -out "$out/temporal-cb" -json "$out/temporal-cb/rows.json"

# 6. Data-parallel training with the projector: GoMLX's DistributedTrainStep with AutoSharding, the
# batch sharded over a 1-D mesh of one device and, where there are more, of all of them; the losses
# must match the single-device step's (the direct path all-reduces r×n coefficients, not m×n ∂W).
step data-parallel 90 "$bin/hooks.test" -test.v -test.run '^TestDataParallelAutoSharding$'

# 7. The scaling benchmark: AdamW against the one option and rank width/16 at widths 1,024 and 4,096
# (docs/benchmarks.md estimates both on paper).
step transformer-scaling 240 "$bin/transformer" -backend "$backend" -q -widths 1024,4096 -steps 24 -out "$out/scaling"

# At most a few files come back from a lent machine: one archive of the reports, and the log.
reports=$(cd "$out" && ls -d default large large-auto temporal-cb scaling 2>/dev/null)
[[ -n "$reports" ]] && tar -czf "$out/results.tar.gz" -C "$out" $reports && (cd "$out" && rm -rf $reports)
say "## done in $((SECONDS - start))s"
