#!/usr/bin/env bash
# `make bench-gpu` on a GPU machine that has python3 with jax[cuda], flax, optax, orbax, torch,
# numpy/scipy, pyyaml, pytest, but no package index and no virtual environment (docs/GPU.md).
# Run from anywhere; it works in the repository it belongs to. It
#   1. installs the pure-Python wheels in GPU_WHEELS (default .whl/: monai, nibabel, pydantic...)
#      into a scratch folder on PYTHONPATH (pip --no-index --no-deps: nothing is downloaded);
#   2. makes the project importable as `diffseg3d` without installing it (a folder of links
#      diffseg3d/<package> -> the checkout, as pyproject.toml maps them), unless it already is;
#   3. records env.txt (date, commit, nvidia-smi, package versions) and runs `make bench-gpu`
#      (python -m benchmarks.gpu_bench; its budget GPU_BENCH_BUDGET_S, default 360 s), its logs
#      and the steps' optimized HLO in a scratch folder;
#   4. leaves in $OUT (default benchmarks/results/gpu_run/): gpu_latest.json (gpu_small_cpu.json
#      for the rehearsal), bench.log, env.txt, hlo_summary.txt, autotune/ (XLA's autotune
#      results) and logs.tar.gz (per-configuration logs and JSON, the optimized HLO texts).
#      gpu_bench itself writes benchmarks/results/gpu_latest.json and
#      benchmarks/results/gpu_autotune/.
# GPU_BENCH_SMALL=1: the CPU rehearsal (--small). GPU_BENCH_ARGS: more gpu_bench options.
# GPU_PYTHON: the python to use (default python3). Exit status: gpu_bench's.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/benchmarks/results/gpu_run}
WHEELS=${GPU_WHEELS:-$ROOT/.whl}
PY=${GPU_PYTHON:-$(command -v python3)}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/bench_gpu.XXXXXX")
LOGS=$SCRATCH/logs
SMALL=${GPU_BENCH_SMALL:-}
RESULT=$ROOT/benchmarks/results/$([ -n "$SMALL" ] && echo gpu_small_cpu.json || echo gpu_latest.json)
AUTOTUNE=$([ -n "$SMALL" ] && echo "$LOGS/autotune" || echo "$ROOT/benchmarks/results/gpu_autotune")
mkdir -p "$OUT" "$LOGS"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

# 1. Wheels: --target keeps them out of the system's site-packages.
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SCRATCH/site" "$WHEELS"/*.whl || { echo "wheel install failed" >&2; exit 3; }
  export PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}
fi

# 2. The project: pyproject maps diffseg3d.<pkg> to top-level folders, so a folder of links
#    gives the same module names as the editable install, with nothing built or installed.
if ! "$PY" -c "import diffseg3d.core" 2>/dev/null; then
  mkdir -p "$SCRATCH/pkg/diffseg3d"
  "$PY" - "$ROOT" "$SCRATCH/pkg/diffseg3d" <<'EOF' || { echo "linking the project failed" >&2; exit 3; }
import os, sys, tomllib
root, target = sys.argv[1:]
dirs = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["tool"]["setuptools"]["package-dir"]
for name, folder in dirs.items():
    if name.count(".") == 1:  # diffseg3d.<package> -> its top-level folder
        os.symlink(os.path.join(root, folder), os.path.join(target, name.split(".")[1]))
EOF
  export PYTHONPATH=$SCRATCH/pkg${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "python: $PY"; echo "PYTHONPATH: $PYTHONPATH"
  git -C "$ROOT" log -1 --format='commit: %H %s' 2>/dev/null
  git -C "$ROOT" status --short 2>/dev/null | head -40
  command -v nvidia-smi >/dev/null && nvidia-smi
  "$PY" -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|jax-cuda.*|flax|optax|torch|monai|nibabel|pydantic|einops|nvidia-cudnn.*) '
} >"$OUT/env.txt" 2>&1

# 3. The benchmark (make when there is one; the same command without it).
ARGS="--log-dir $LOGS --autotune-dir $AUTOTUNE --budget-s ${GPU_BENCH_BUDGET_S:-$([ -n "$SMALL" ] && echo 780 || echo 360)} ${GPU_BENCH_ARGS:-}"
if command -v make >/dev/null; then
  make --no-print-directory bench-gpu GPU_PYTHON="$PY" GPU_BENCH_SMALL="$SMALL" \
    BENCH_GPU_ARGS="$ARGS" 2>&1 | tee "$OUT/bench.log"
else
  # shellcheck disable=SC2086  # ARGS is a list of options
  "$PY" -m benchmarks.gpu_bench ${SMALL:+--small} $ARGS 2>&1 | tee "$OUT/bench.log"
fi
STATUS=${PIPESTATUS[0]}

# 4. The JSON, the HLO summary, the autotune results and one archive of the logs.
[ -f "$RESULT" ] && cp "$RESULT" "$OUT/"
[ -f "$LOGS/hlo_summary.txt" ] && cp "$LOGS/hlo_summary.txt" "$OUT/"
[ -d "$AUTOTUNE" ] && cp -r "$AUTOTUNE" "$OUT/autotune"
(cd "$LOGS" && find . \( -name '*.log' -o -name '*.json' -o -name 'hlo_summary.txt' \
   -o -path './hlo/*.txt' \) | tar czf "$OUT/logs.tar.gz" -T -)
rm -rf "$SCRATCH"
echo "bench-gpu: exit $STATUS after $(( $(date +%s) - T0 )) s; results in $OUT" | tee -a "$OUT/bench.log"
exit "$STATUS"
