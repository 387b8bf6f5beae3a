#!/usr/bin/env bash
# The one command of a GPU lease (issue #10; docs/GPU.md): run on the device machine from the
# repository root. It
#   1. installs the carried pure-Python wheels (GPU_WHEELS, default .whl/: monai, nibabel,
#      pydantic...; the machine has no package index) into a folder on PYTHONPATH;
#   2. makes the project importable as `diffseg3d` without installing it (a folder of links:
#      diffseg3d/{core,experiments,analysis,cli} -> the checkout), unless it already is;
#   3. runs `make bench-gpu` (python -m benchmarks.gpu_bench; budget GPU_BENCH_BUDGET_S, 480 s)
#      with its logs and HLO dump in a scratch folder;
#   4. copies to $OUT: gpu_latest.json (or gpu_small_cpu.json), bench.log, env.txt,
#      hlo_summary.txt, logs.tar.gz (per-configuration logs, the optimized HLO text).
# GPU_BENCH_SMALL=1: the CPU rehearsal (--small). GPU_BENCH_ARGS: more gpu_bench options.
# Exit status: gpu_bench's.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_out}
WHEELS=${GPU_WHEELS:-$ROOT/.whl}
PY=${GPU_PYTHON:-$(command -v python3)}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")
LOGS=$SCRATCH/logs
SMALL=${GPU_BENCH_SMALL:-}
RESULT=$SCRATCH/$([ -n "$SMALL" ] && echo gpu_small_cpu.json || echo gpu_latest.json)
mkdir -p "$OUT" "$LOGS"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

# 1. Wheels: --target keeps them out of the system's site-packages; --no-deps --no-index
#    because nothing can be fetched there (docs/GPU.md lists what to carry).
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SCRATCH/site" "$WHEELS"/*.whl || { echo "wheel install failed" >&2; exit 3; }
  export PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}
fi

# 2. The project: pyproject maps diffseg3d.<pkg> to top-level folders, so a folder of links
#    gives the same module names as the editable install, with nothing built or installed.
if ! "$PY" -c "import diffseg3d.core" 2>/dev/null; then
  mkdir -p "$SCRATCH/pkg/diffseg3d"
  for p in core experiments analysis cli; do ln -s "$ROOT/$p" "$SCRATCH/pkg/diffseg3d/$p"; done
  export PYTHONPATH=$SCRATCH/pkg${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "python: $PY"; echo "PYTHONPATH: $PYTHONPATH"
  git -C "$ROOT" log -1 --format='commit: %H %s' 2>/dev/null
  git -C "$ROOT" status --short 2>/dev/null | head -40
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PY" -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|flax|optax|torch|monai|nibabel|pydantic|einops) '
} >"$OUT/env.txt" 2>&1

# 3. The benchmark (make when there is one; the same command without it).
ARGS="--log-dir $LOGS --out $RESULT --budget-s ${GPU_BENCH_BUDGET_S:-480} ${GPU_BENCH_ARGS:-}"
if command -v make >/dev/null; then
  make --no-print-directory bench-gpu GPU_PYTHON="$PY" GPU_BENCH_SMALL="$SMALL" \
    BENCH_GPU_ARGS="$ARGS" 2>&1 | tee "$OUT/bench.log"
else
  # shellcheck disable=SC2086  # ARGS is a list of options
  "$PY" -m benchmarks.gpu_bench ${SMALL:+--small} $ARGS 2>&1 | tee "$OUT/bench.log"
fi
STATUS=${PIPESTATUS[0]}

# 4. What comes back ($OUT: at most 8 files): the JSON, the log, the HLO summary, and one
#    archive of the per-configuration logs and the optimized HLO text (not XLA's .ll/.o files).
[ -f "$RESULT" ] && cp "$RESULT" "$OUT/"
[ -f "$LOGS/hlo_summary.txt" ] && cp "$LOGS/hlo_summary.txt" "$OUT/"
(cd "$LOGS" && find . \( -name '*.log' -o -name '*.json' -o -name 'hlo_summary.txt' \
   -o -name '*after_optimizations.txt' \) | tar czf "$OUT/logs.tar.gz" -T -)
echo "gpu_session: exit $STATUS after $(( $(date +%s) - T0 )) s; results in $OUT" | tee -a "$OUT/bench.log"
exit "$STATUS"
