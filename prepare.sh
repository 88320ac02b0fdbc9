#!/usr/bin/env bash
# Fetch COCO 2017 (or coco128) and the YOLOv5 v6.0 pretrained weights into the layout the
# training commands expect. Every download resumes where it stopped, is verified, and appears
# under its final name only when complete; a second run finds everything present and does
# nothing. Details: docs/prepare.md; options: bash prepare.sh --help.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=utils_mlu/common_utils.sh
. "$ROOT/utils_mlu/common_utils.sh"
# shellcheck source=scripts/prepare_lib.sh
. "$ROOT/scripts/prepare_lib.sh"

usage() {
    cat <<EOF
usage: bash prepare.sh [options]

Downloads into the layout yolov5/data/coco.yaml and coco128.yaml expect:
  <data root>/coco/images/{train2017,val2017}, labels/{train2017,val2017}, train2017.txt, val2017.txt,
  annotations/;  <data root>/coco128/;  <weights dir>/yolov5{n,s,m,l,x}.pt

options:
  --data-root DIR     datasets go to DIR/coco, DIR/coco128 (default \$DATASET_ROOT or <repo>/datasets)
  --weights-dir DIR   weights go here (default \$MODEL_ROOT or <repo>/yolov5_model)
  --only LIST         comma-separated parts: coco, coco128, weights (default coco,weights)
  --labels MODE       convert: make YOLO labels from the official instances JSON (default);
                      download: take the ready labels archive coco2017labels.zip
  --models LIST       weights to fetch, e.g. m or n,s,m (default n,s,m,l,x)
  --coco128-dir DIR   copy coco128 from this local folder instead of downloading (or \$COCO128_DIR)
  --keep-archives     keep the downloaded zips in <data root>/downloads/ after unpacking
  --dry-run           say what would be done, change nothing, use no network
  -h, --help          this text

environment:
  COCO_MIRROR     base URL for COCO (default http://images.cocodataset.org): files at
                  \$COCO_MIRROR/zips/{train2017,val2017}.zip, \$COCO_MIRROR/annotations/annotations_trainval2017.zip
  WEIGHTS_MIRROR  base URL for the ultralytics/yolov5 release assets
                  (default https://github.com/ultralytics/yolov5/releases/download): \$WEIGHTS_MIRROR/v6.0/yolov5s.pt,
                  \$WEIGHTS_MIRROR/v1.0/coco128.zip, \$WEIGHTS_MIRROR/v1.0/coco2017labels.zip
  PREPARE_TIMEOUT seconds to wait for a server (default 10)   PREPARE_RETRIES resumes per download (default 3)
  PREPARE_PYTHON  Python with torch for the label conversion and weight check (default: scripts/setup_env.sh)
  PYTHON          python3 used for downloading and unpacking (default python3)
exit codes: 0 done, 1 failed, 2 bad option, 3 server unreachable
EOF
}

usage_error() {
    log_error "$* (see bash prepare.sh --help)"
    exit 2
}

abs_path() {
    case "$1" in
        /*) printf '%s\n' "${1%/}" ;;
        *) printf '%s\n' "$PWD/${1%/}" ;;
    esac
}

DATA_ROOT="${DATASET_ROOT:-$ROOT/datasets}"
WEIGHTS_DIR="${MODEL_ROOT:-$ROOT/yolov5_model}"
ONLY="coco,weights"
LABELS_MODE=convert
MODEL_LIST="n,s,m,l,x"
COCO128_SRC="${COCO128_DIR:-}"
DRY_RUN=0
KEEP_ARCHIVES=0
COCO_MIRROR="${COCO_MIRROR:-http://images.cocodataset.org}"
WEIGHTS_MIRROR="${WEIGHTS_MIRROR:-https://github.com/ultralytics/yolov5/releases/download}"
SYS_PY="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1; shift; continue ;;
        --keep-archives) KEEP_ARCHIVES=1; shift; continue ;;
        --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;  # --opt=value -> --opt value
    esac
    case "$1" in
        --data-root | --weights-dir | --only | --labels | --models | --coco128-dir)
            [ $# -ge 2 ] || usage_error "$1 needs a value" ;;
        *) usage_error "unknown option '$1'" ;;
    esac
    case "$1" in
        --data-root) DATA_ROOT="$2" ;;
        --weights-dir) WEIGHTS_DIR="$2" ;;
        --only) ONLY="$2" ;;
        --labels) LABELS_MODE="$2" ;;
        --models) MODEL_LIST="$2" ;;
        --coco128-dir) COCO128_SRC="$2" ;;
    esac
    shift 2
done

[ -n "$DATA_ROOT" ] || usage_error "--data-root / DATASET_ROOT is empty"
[ -n "$WEIGHTS_DIR" ] || usage_error "--weights-dir / MODEL_ROOT is empty"
DATA_ROOT="$(abs_path "$DATA_ROOT")"
WEIGHTS_DIR="$(abs_path "$WEIGHTS_DIR")"
[ -z "$COCO128_SRC" ] || COCO128_SRC="$(abs_path "$COCO128_SRC")"
case "$LABELS_MODE" in
    convert | download) ;;
    *) usage_error "--labels must be convert or download, not '$LABELS_MODE'" ;;
esac
for var in COCO_MIRROR WEIGHTS_MIRROR; do
    case "${!var}" in
        http://?* | https://?*) printf -v "$var" '%s' "${!var%/}" ;;
        *) usage_error "$var='${!var}' must be an http:// or https:// base URL" ;;
    esac
done
[ -n "$ONLY" ] || usage_error "--only is empty"
PARTS=()
IFS=',' read -r -a items <<<"$ONLY"
for item in "${items[@]}"; do
    case "$item" in
        coco | coco128 | weights) PARTS+=("$item") ;;
        *) usage_error "--only: unknown part '$item' (use coco, coco128, weights)" ;;
    esac
done
[ ${#PARTS[@]} -gt 0 ] || usage_error "--only is empty"
[ -n "$MODEL_LIST" ] || usage_error "--models is empty"
MODELS=()
IFS=',' read -r -a items <<<"$MODEL_LIST"
for item in "${items[@]}"; do
    item="${item%.pt}"
    item="${item#yolov5}"
    case "$item" in
        n | s | m | l | x) MODELS+=("$item") ;;
        *) usage_error "--models: unknown model '$item' (use n, s, m, l, x)" ;;
    esac
done
command -v "$SYS_PY" >/dev/null 2>&1 || usage_error "no '$SYS_PY' found: prepare.sh needs python3 (set PYTHON)"

main() {
    local part
    log_info "data root $DATA_ROOT, weights $WEIGHTS_DIR, parts: ${PARTS[*]}$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
    # Collect first: sizes, reachability and disk space are checked before any download starts.
    for part in weights coco128 coco; do
        if [[ " ${PARTS[*]} " == *" $part "* ]]; then "${part}_collect"; fi
    done
    if [ "$TODO" = 0 ]; then
        log_info "everything is present: nothing to do"
        return 0
    fi
    if [ ${#PLAN[@]} -gt 0 ]; then
        if [ "$DRY_RUN" = 1 ]; then
            "$SYS_PY" "$ROOT/scripts/fetch.py" plan --offline "${PLAN[@]}" || exit $?
        else
            log_info "asking the servers for $((${#PLAN[@]} / 2)) file size(s) and checking disk space"
            "$SYS_PY" "$ROOT/scripts/fetch.py" plan "${PLAN[@]}" || exit $?
        fi
    fi
    if [ "$DRY_RUN" = 1 ]; then
        log_info "dry run: nothing was changed"
        return 0
    fi
    trap cleanup_staging EXIT
    for part in weights coco128 coco; do
        if [[ " ${PARTS[*]} " == *" $part "* ]]; then "${part}_run"; fi
    done
    log_info "done: all requested data and weights are in place"
}

main
