#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install what the code needs.
#
#   bash scripts/setup_env.sh             runtime dependencies
#   bash scripts/setup_env.sh --dev       runtime + test dependencies
#   bash scripts/setup_env.sh --notebook  runtime + Jupyter Notebook, to open pytorch_yolov5_train.ipynb
#                                         (flags combine: --dev --notebook)
#
# Environment: PYTHON (interpreter to build the venv from, default python3), VENV (default
# <repo>/.venv), TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1", used only when no
# torch is importable). If the base interpreter already has torch (a Cambricon image with
# torch_mlu, a CUDA image), the venv sees it through --system-site-packages and torch is never
# reinstalled or replaced.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="${VENV:-$root/.venv}"
torch_spec="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
want_dev=0
want_notebook=0
for arg in "$@"; do
  case "$arg" in
    --dev) want_dev=1 ;;
    --notebook) want_notebook=1 ;;
    *) printf '[setup] unknown option %s (use --dev and/or --notebook)\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  if "$python" -c 'import torch' >/dev/null 2>&1; then
    log "torch found in $python: creating $venv on top of it (torch will not be reinstalled)"
    "$python" -m venv --system-site-packages "$venv"
  else
    log "creating $venv"
    "$python" -m venv "$venv"
  fi
fi
vpy="$venv/bin/python"

if ! "$vpy" -c 'import torch, torchvision' >/dev/null 2>&1; then
  log "no torch importable: installing $torch_spec (a few minutes)"
  # shellcheck disable=SC2086  # torch_spec is a list of requirement specifiers
  "$vpy" -m pip install --disable-pip-version-check -q $torch_spec
fi

# Re-run pip only when the requirement files changed since the last successful install.
reqs=("$root/requirements_mlu.txt")
if [ "$want_dev" = 1 ]; then reqs+=("$root/requirements-dev.txt" "$root/requirements-export.txt"); fi
if [ "$want_notebook" = 1 ]; then reqs+=("$root/requirements-notebook.txt"); fi
suffix=""
if [ "$want_dev" = 1 ]; then suffix="-dev"; fi
if [ "$want_notebook" = 1 ]; then suffix="$suffix-notebook"; fi
stamp="$venv/.requirements${suffix}.sha256"  # one per mode, so the modes don't undo each other
digest="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || ! grep -qx "$digest" "$stamp"; then
  log "installing ${reqs[*]##*/}"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done  # -r nesting is resolved by pip
  "$vpy" -m pip install --disable-pip-version-check -q "${args[@]}"
  echo "$digest" > "$stamp"
fi
echo "$vpy"
