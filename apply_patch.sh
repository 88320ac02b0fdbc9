#!/usr/bin/env bash
# Port your own YOLOv5 checkout (upstream v6.0-v7.0, modified or not) to Cambricon MLU, in place:
#   bash apply_patch.sh PATH [--modernize] [--check | --revert]
# Writes PATH/yolov5_mlu.patch (the diff of what it changed). Exit 0: ported (or already was);
# 2: some change found no place, and nothing was changed. See docs/porting.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ $# -eq 0 ]; then
  cat <<MSG
This repository's yolov5/ is already MLU-ready: cd yolov5 && python train.py --device mlu (see README.md).
apply_patch.sh ports another YOLOv5 checkout (upstream v6.0 to v7.0, with your own changes) in place:
  bash apply_patch.sh /path/to/your/yolov5            # port; writes /path/to/your/yolov5/yolov5_mlu.patch
  bash apply_patch.sh /path/to/your/yolov5 --check    # show the diff, change nothing
  bash apply_patch.sh /path/to/your/yolov5 --revert   # undo the port
  add --modernize for the fixes an old tree needs on a current numpy/torch/Python
MSG
  exit 0
fi
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in "$here/.venv/bin/python" python3 python; do
    if command -v "$c" >/dev/null 2>&1; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || { echo "ERROR: no python3 found; set PYTHON=/path/to/python" >&2; exit 2; }
exec "$py" "$here/tools/porting/port_yolov5.py" "$@"
