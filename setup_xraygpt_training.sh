#!/usr/bin/env bash
# Set up an XrayGPT training machine, then check it with validate_training_setup.py.
#
# Safe to run again: an existing environment is reused, pip skips what is already
# installed, folders are created only when missing and the phantom data is drawn only
# when its annotation file is absent. Never uses sudo. Exits with the validator's code
# (0: ready to train), or non-zero with a message naming the step that failed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./setup_xraygpt_training.sh [options] [-- VALIDATOR_ARGS...]

Creates (or reuses) the Python environment, installs requirements.txt, creates the
folder layout the configs expect and runs validate_training_setup.py on a config.

Options:
  --venv DIR         virtual environment to create or reuse (default: .venv)
  --no-venv          use the active interpreter instead (e.g. after
                     `conda env create -f env.yml && conda activate xraygpt`)
  --python EXE       interpreter that creates the venv (default: python3; needs >= 3.11)
  --skip-install     do not run pip (the environment is already complete)
  --phantom          also draw the synthetic phantom data set into dataset/phantom
  --phantom-n N      number of phantom images (default: 3000)
  --cfg-path CFG     config to validate (default: train_configs/xraygpt_tiny_stage1.yaml
                     with --phantom, else train_configs/xraygpt_mimic_pretrain.yaml)
  --no-validate      stop after the set-up, without running the validator
  -h, --help         show this help

Arguments after `--` go to the validator, e.g. `-- --sample-images 64 --json`.

Folders created (relative to the repository root):
  dataset/mimic/image  dataset/openi/image  vicuna_weights  xraygpt/pretrained_ckpt
  output/xraygpt_mimic_pretrain  output/xraygpt_openi_finetune   (+ dataset/phantom)
EOF
}

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

VENV=".venv"
USE_VENV=1
PYTHON_EXE="python3"
SKIP_INSTALL=0
PHANTOM=0
PHANTOM_N=3000
CFG_PATH=""
VALIDATE=1
VALIDATOR_ARGS=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --venv) need_value "$@"; VENV="$2"; shift 2 ;;
    --no-venv) USE_VENV=0; shift ;;
    --python) need_value "$@"; PYTHON_EXE="$2"; shift 2 ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --phantom) PHANTOM=1; shift ;;
    --phantom-n) need_value "$@"; PHANTOM_N="$2"; shift 2 ;;
    --cfg-path) need_value "$@"; CFG_PATH="$2"; shift 2 ;;
    --no-validate) VALIDATE=0; shift ;;
    --) shift; VALIDATOR_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

[[ "$PHANTOM_N" =~ ^[1-9][0-9]*$ ]] || die "--phantom-n must be a positive integer, got '$PHANTOM_N'"

# Every path below is relative to the repository root, as in the configs.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
[[ -f requirements.txt && -f validate_training_setup.py ]] \
  || die "run this script from an XrayGPT checkout (requirements.txt not found in $ROOT)"

python_ok() {  # python_ok EXE: true when EXE runs and is Python >= 3.11
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

# 1. Python environment ---------------------------------------------------------------
if [[ $USE_VENV -eq 1 ]]; then
  if [[ -x "$VENV/bin/python" ]]; then
    say "reusing the environment in $VENV"
  else
    command -v "$PYTHON_EXE" >/dev/null \
      || die "'$PYTHON_EXE' not found: install Python >= 3.11, or pass --python /path/to/python3.11"
    python_ok "$PYTHON_EXE" \
      || die "$PYTHON_EXE is Python $("$PYTHON_EXE" -c 'import platform; print(platform.python_version())'); XrayGPT needs >= 3.11 (pass --python python3.11, or use env.yml with conda)"
    say "creating the environment $VENV with $PYTHON_EXE"
    "$PYTHON_EXE" -m venv "$VENV" \
      || die "could not create $VENV (Debian/Ubuntu: the python3-venv package is missing; or use conda: conda env create -f env.yml)"
  fi
  PY="$VENV/bin/python"
else
  PY="$(command -v python || command -v python3 || true)"
  [[ -n "$PY" ]] || die "--no-venv: no python on PATH (activate the conda environment first)"
  say "using the active interpreter $PY"
fi
python_ok "$PY" || die "$PY is not Python >= 3.11: remove $VENV and rerun with --python python3.11"

# 2. Packages -----------------------------------------------------------------------------
if [[ $SKIP_INSTALL -eq 1 ]]; then
  say "skipping pip install (--skip-install)"
else
  say "installing requirements.txt (fast when already satisfied)"
  "$PY" -m pip install --disable-pip-version-check -q -r requirements.txt \
    || die "pip install -r requirements.txt failed (see the pip output above); rerun once fixed"
fi

# 3. Folder layout --------------------------------------------------------------------
LAYOUT=(
  dataset/mimic/image
  dataset/openi/image
  vicuna_weights
  xraygpt/pretrained_ckpt
  output/xraygpt_mimic_pretrain
  output/xraygpt_openi_finetune
)
for dir in "${LAYOUT[@]}"; do
  if [[ -d "$dir" ]]; then
    say "folder $dir exists"
  else
    mkdir -p "$dir" || die "cannot create $dir (is the disk full or read-only?)"
    say "created $dir"
  fi
done

# 4. Phantom data -------------------------------------------------------------------------
if [[ $PHANTOM -eq 1 ]]; then
  # The generator writes filter_cap.json last, so its presence means a complete set.
  if [[ -f dataset/phantom/filter_cap.json ]]; then
    say "phantom data exists in dataset/phantom (delete the folder to redraw it)"
  else
    say "drawing $PHANTOM_N phantom radiographs into dataset/phantom"
    "$PY" -m xraygpt phantom --out dataset/phantom --n "$PHANTOM_N" \
      || die "phantom generation failed (see above)"
  fi
fi

# 5. Validation ---------------------------------------------------------------------------
if [[ -z "$CFG_PATH" ]]; then
  if [[ $PHANTOM -eq 1 ]]; then
    CFG_PATH="train_configs/xraygpt_tiny_stage1.yaml"
  else
    CFG_PATH="train_configs/xraygpt_mimic_pretrain.yaml"
  fi
fi
if [[ $VALIDATE -eq 0 ]]; then
  say "set-up done; validate later with: $PY validate_training_setup.py --cfg-path $CFG_PATH"
  exit 0
fi
say "validating the set-up for $CFG_PATH"
status=0
"$PY" validate_training_setup.py --cfg-path "$CFG_PATH" ${VALIDATOR_ARGS[@]+"${VALIDATOR_ARGS[@]}"} || status=$?
if [[ $status -eq 0 ]]; then
  say "ready: train with  $PY train.py --cfg-path $CFG_PATH"
else
  say "not ready: fix the items marked ✗ above, then rerun this script (exit $status)" >&2
fi
exit "$status"
