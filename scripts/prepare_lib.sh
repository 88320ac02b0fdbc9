#!/usr/bin/env bash
# The steps of prepare.sh, sourced by it (it sets ROOT, DATA_ROOT, WEIGHTS_DIR, LABELS_MODE,
# MODELS, COCO128_SRC, DRY_RUN, KEEP_ARCHIVES, COCO_MIRROR, WEIGHTS_MIRROR, SYS_PY).
#
# Each part has a *_collect function, which reports what is present and queues the downloads
# still needed (PLAN), and a *_run function, which does the work. Downloads and unpacking happen
# in <root>/downloads/; a result is renamed to its final place only after it has been checked.

PLAN=()       # url dest url dest ... still to download
TODO=0        # things to do; 0 means everything is present
VENV_PY=""    # Python with torch (set by ensure_venv_python)
COCO_SPLITS=(val2017 train2017)

die() {
    log_error "$*"
    exit 1
}

todo() {
    TODO=$((TODO + 1))
    if [ "$DRY_RUN" = 1 ]; then log_info "would $*"; fi
}

plan_add() {
    local i
    for ((i = 0; i < ${#PLAN[@]}; i += 2)); do
        [ "${PLAN[i]}" = "$1" ] && return 0
    done
    PLAN+=("$1" "$2")
}

fetch_get() {
    "$SYS_PY" "$ROOT/scripts/fetch.py" get "$1" "$2" || exit $?
}

check_images() {
    "$SYS_PY" "$ROOT/scripts/archive_tools.py" check-images "$1" "$2"
}

merge_into() {
    "$SYS_PY" "$ROOT/scripts/archive_tools.py" merge "$1" "$2" || die "could not move $1 into $2"
}

# unpack_archive ZIP DIR: unpack into DIR; a damaged archive is deleted so the next run fetches it anew.
unpack_archive() {
    if ! "$SYS_PY" "$ROOT/scripts/archive_tools.py" unpack "$1" "$2"; then
        rm -f "$1"
        die "$1 failed the archive check and was deleted (nothing was placed under the final names)." \
            "Run prepare.sh again to download it anew; if it fails again, the mirror's copy is bad."
    fi
}

drop_archive() {
    if [ "$KEEP_ARCHIVES" = 1 ]; then log_info "kept $1 (--keep-archives)"; else rm -f "$1"; fi
}

ensure_venv_python() {
    [ -n "$VENV_PY" ] && return 0
    if [ -n "${PREPARE_PYTHON:-}" ]; then
        VENV_PY="$PREPARE_PYTHON"
    else
        log_info "setting up the Python environment (scripts/setup_env.sh)"
        VENV_PY="$(bash "$ROOT/scripts/setup_env.sh")" || die "scripts/setup_env.sh failed (see above)"
        VENV_PY="$(printf '%s\n' "$VENV_PY" | tail -n 1)"
    fi
}

# write_data_yaml NAME DIR: a copy of yolov5/data/NAME.yaml whose `path` is DIR, when DIR is not
# where the shipped yaml looks (../datasets/NAME from yolov5/).
write_data_yaml() {
    local name="$1" dir="$2" src="$ROOT/yolov5/data/$1.yaml" out="$2/$1.yaml" line tmp quoted
    if [ "$(cd "$dir" && pwd -P)" = "$(cd "$ROOT" && pwd -P)/datasets/$name" ]; then
        log_info "$name: train with --data $name.yaml (yolov5/data/$name.yaml points here)"
        return 0
    fi
    quoted="'${dir//\'/\'\'}'"
    tmp="$out.tmp.$$"
    while IFS= read -r line; do
        case "$line" in
            path:*) printf 'path: %s  # written by prepare.sh\n' "$quoted" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done <"$src" >"$tmp"
    if [ -f "$out" ] && cmp -s "$tmp" "$out"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$out"
        log_info "wrote $out: yolov5/data/$name.yaml with path $dir"
    fi
    log_info "$name: train with --data $out (yolov5/data/$name.yaml looks in ../datasets/$name)"
}

# ----------------------------------------------------------------------------------- weights
weights_pending() {
    local m
    for m in "${MODELS[@]}"; do
        [ -s "$WEIGHTS_DIR/yolov5$m.pt" ] || printf '%s\n' "$m"
    done
}

weights_collect() {
    local m pending
    pending="$(weights_pending)"
    for m in "${MODELS[@]}"; do
        if [ -s "$WEIGHTS_DIR/yolov5$m.pt" ]; then log_info "present: $WEIGHTS_DIR/yolov5$m.pt"; fi
    done
    for m in $pending; do
        plan_add "$WEIGHTS_MIRROR/v6.0/yolov5$m.pt" "$WEIGHTS_DIR/downloads/yolov5$m.pt"
        todo "download and check $WEIGHTS_DIR/yolov5$m.pt"
    done
}

weights_run() {
    local m f files=() good bad=0
    for m in $(weights_pending); do
        fetch_get "$WEIGHTS_MIRROR/v6.0/yolov5$m.pt" "$WEIGHTS_DIR/downloads/yolov5$m.pt"
        files+=("$WEIGHTS_DIR/downloads/yolov5$m.pt")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    ensure_venv_python
    log_info "checking ${#files[@]} weight file(s) with the safe loader"
    good="$("$VENV_PY" "$ROOT/scripts/check_weights.py" "${files[@]}")" || true
    for f in "${files[@]}"; do
        if grep -qxF -- "$f" <<<"$good"; then
            mv "$f" "$WEIGHTS_DIR/${f##*/}"
            log_info "ready: $WEIGHTS_DIR/${f##*/}"
        else
            rm -f "$f"
            bad=$((bad + 1))
        fi
    done
    rmdir "$WEIGHTS_DIR/downloads" 2>/dev/null || true
    [ "$bad" = 0 ] || die "$bad weight file(s) did not load and were deleted; run prepare.sh again to" \
        "download them anew (if that fails too, the copy on WEIGHTS_MIRROR=$WEIGHTS_MIRROR is bad)"
}

# ----------------------------------------------------------------------------------- coco128
coco128_ready() {
    local d="$DATA_ROOT/coco128"
    [ -d "$d/labels/train2017" ] && [ -n "$(ls -A "$d/images/train2017" 2>/dev/null)" ]
}

coco128_collect() {
    if coco128_ready; then
        log_info "present: $DATA_ROOT/coco128"
    elif [ -n "$COCO128_SRC" ]; then
        if [ ! -d "$COCO128_SRC/images/train2017" ] || [ ! -d "$COCO128_SRC/labels/train2017" ]; then
            die "coco128 folder $COCO128_SRC (--coco128-dir / COCO128_DIR) must hold images/train2017 and" \
                "labels/train2017"
        fi
        todo "copy $COCO128_SRC to $DATA_ROOT/coco128"
    else
        plan_add "$WEIGHTS_MIRROR/v1.0/coco128.zip" "$DATA_ROOT/downloads/coco128.zip"
        todo "download and unpack coco128.zip into $DATA_ROOT/coco128"
    fi
}

coco128_run() {
    local dl="$DATA_ROOT/downloads" dest="$DATA_ROOT/coco128" n_img n_lbl
    if ! coco128_ready; then
        [ ! -e "$dest" ] || die "$dest exists but lacks images/train2017 or labels/train2017; move it away" \
            "and run prepare.sh again"
        rm -rf "$dl/unpack-coco128"
        mkdir -p "$dl/unpack-coco128"
        if [ -n "$COCO128_SRC" ]; then
            log_info "copying $COCO128_SRC to $dest"
            cp -R "$COCO128_SRC" "$dl/unpack-coco128/coco128" || die "copying $COCO128_SRC failed"
            chmod -R u+w "$dl/unpack-coco128"  # a read-only source must not give read-only results
            [ "$(find "$COCO128_SRC" -type f | wc -l)" = "$(find "$dl/unpack-coco128/coco128" -type f | wc -l)" ] ||
                die "the copy of $COCO128_SRC is incomplete (disk full?)"
        else
            fetch_get "$WEIGHTS_MIRROR/v1.0/coco128.zip" "$dl/coco128.zip"
            unpack_archive "$dl/coco128.zip" "$dl/unpack-coco128"
        fi
        if [ ! -d "$dl/unpack-coco128/coco128/labels/train2017" ] ||
            [ -z "$(ls -A "$dl/unpack-coco128/coco128/images/train2017" 2>/dev/null)" ]; then
            die "coco128 has an unexpected layout: expected coco128/images/train2017 and coco128/labels/train2017"
        fi
        n_img="$(find "$dl/unpack-coco128/coco128/images/train2017" -type f | wc -l)"
        n_lbl="$(find "$dl/unpack-coco128/coco128/labels/train2017" -name '*.txt' | wc -l)"
        mv "$dl/unpack-coco128/coco128" "$dest"
        rm -rf "$dl/unpack-coco128"
        [ -n "$COCO128_SRC" ] || drop_archive "$dl/coco128.zip"
        log_info "ready: $dest ($n_img images, $n_lbl label files)"
    fi
    write_data_yaml coco128 "$dest"
}

# ----------------------------------------------------------------------------------- COCO 2017
COCO_ANN_ZIP=annotations_trainval2017.zip
COCO_LABELS_ZIP=coco2017labels.zip

# The image list of a split: the final one, or the one waiting in downloads/ for its images.
coco_list() {
    if [ -f "$DATA_ROOT/coco/$1.txt" ]; then
        printf '%s\n' "$DATA_ROOT/coco/$1.txt"
    elif [ -f "$DATA_ROOT/downloads/coco-$1.txt" ]; then
        printf '%s\n' "$DATA_ROOT/downloads/coco-$1.txt"
    else
        return 1
    fi
}

coco_split_ready() {
    local c="$DATA_ROOT/coco"
    [ -d "$c/images/$1" ] && [ -d "$c/labels/$1" ] && [ -f "$c/$1.txt" ] &&
        check_images "$c/images/$1" "$c/$1.txt" >/dev/null 2>&1
}

coco_needs_labels() {
    [ ! -d "$DATA_ROOT/coco/labels/$1" ] || ! coco_list "$1" >/dev/null
}

coco_collect() {
    local s c="$DATA_ROOT/coco" dl="$DATA_ROOT/downloads"
    for s in "${COCO_SPLITS[@]}"; do
        if coco_split_ready "$s"; then
            log_info "present: $c/images/$s, $c/labels/$s, $c/$s.txt"
            continue
        fi
        if coco_needs_labels "$s"; then
            if [ "$LABELS_MODE" = download ]; then
                plan_add "$WEIGHTS_MIRROR/v1.0/$COCO_LABELS_ZIP" "$dl/$COCO_LABELS_ZIP"
                todo "take labels/$s and $s.txt from $COCO_LABELS_ZIP"
            else
                [ -f "$c/annotations/instances_$s.json" ] ||
                    plan_add "$COCO_MIRROR/annotations/$COCO_ANN_ZIP" "$dl/$COCO_ANN_ZIP"
                todo "convert annotations/instances_$s.json into labels/$s and $s.txt"
            fi
        fi
        if [ ! -d "$c/images/$s" ]; then
            plan_add "$COCO_MIRROR/zips/$s.zip" "$dl/$s.zip"
            todo "download $s.zip and unpack it into $c/images/$s"
        else
            todo "check $c/images/$s against the image list"
        fi
    done
}

coco_annotations() {
    local dl="$DATA_ROOT/downloads"
    fetch_get "$COCO_MIRROR/annotations/$COCO_ANN_ZIP" "$dl/$COCO_ANN_ZIP"
    unpack_archive "$dl/$COCO_ANN_ZIP" "$dl/unpack-annotations"
    [ -d "$dl/unpack-annotations/annotations" ] || die "$COCO_ANN_ZIP has no annotations/ folder"
    merge_into "$dl/unpack-annotations/annotations" "$DATA_ROOT/coco/annotations"
    rm -rf "$dl/unpack-annotations"
    drop_archive "$dl/$COCO_ANN_ZIP"
}

coco_labels_convert() {
    local s="$1" c="$DATA_ROOT/coco" tmp="$DATA_ROOT/downloads/convert-$1"
    [ -f "$c/annotations/instances_$s.json" ] || coco_annotations
    [ -f "$c/annotations/instances_$s.json" ] || die "$COCO_ANN_ZIP has no annotations/instances_$s.json"
    ensure_venv_python
    rm -rf "$tmp"
    log_info "converting $c/annotations/instances_$s.json to YOLO labels"
    (cd "$ROOT/yolov5" && "$VENV_PY" -m utils.data.coco_convert --json "$c/annotations/instances_$s.json" \
        --out "$tmp/labels" --list "$tmp/$s.txt") || die "label conversion of instances_$s.json failed"
    if [ -d "$c/labels/$s" ]; then
        log_warn "kept the existing $c/labels/$s (delete it to regenerate the labels)"
    else
        mkdir -p "$c/labels"
        mv "$tmp/labels" "$c/labels/$s"
    fi
    mv "$tmp/$s.txt" "$DATA_ROOT/downloads/coco-$s.txt"  # final once the images are checked
    rm -rf "$tmp"
}

coco_labels_download() {
    local s dl="$DATA_ROOT/downloads" src="$DATA_ROOT/downloads/unpack-labels/coco"
    fetch_get "$WEIGHTS_MIRROR/v1.0/$COCO_LABELS_ZIP" "$dl/$COCO_LABELS_ZIP"
    unpack_archive "$dl/$COCO_LABELS_ZIP" "$dl/unpack-labels"
    [ -d "$src/labels" ] || die "$COCO_LABELS_ZIP has an unexpected layout: expected coco/labels/"
    for s in "${COCO_SPLITS[@]}"; do
        if [ -d "$DATA_ROOT/coco/labels/$s" ]; then rm -rf "${src:?}/labels/$s"; fi  # keep what is there
        [ -f "$src/$s.txt" ] || die "$COCO_LABELS_ZIP has no coco/$s.txt"
        if coco_list "$s" >/dev/null; then rm -f "$src/$s.txt"; else mv "$src/$s.txt" "$dl/coco-$s.txt"; fi
    done
    merge_into "$src" "$DATA_ROOT/coco"
    rm -rf "$dl/unpack-labels"
    drop_archive "$dl/$COCO_LABELS_ZIP"
}

coco_images() {
    local s="$1" c="$DATA_ROOT/coco" dl="$DATA_ROOT/downloads" list
    list="$(coco_list "$s")" || die "no image list for $s"
    if [ -d "$c/images/$s" ]; then
        check_images "$c/images/$s" "$list" || die "$c/images/$s does not match $list; move the folder" \
            "away and run prepare.sh again to download $s.zip"
        return 0
    fi
    fetch_get "$COCO_MIRROR/zips/$s.zip" "$dl/$s.zip"
    unpack_archive "$dl/$s.zip" "$dl/unpack-$s"
    [ -d "$dl/unpack-$s/$s" ] || die "$s.zip has an unexpected layout: expected a folder $s/"
    if ! check_images "$dl/unpack-$s/$s" "$list"; then
        rm -rf "$dl/unpack-$s"
        die "$s.zip does not hold the images of $list (kept $dl/$s.zip); the labels and images come from" \
            "different releases"
    fi
    mkdir -p "$c/images"
    mv "$dl/unpack-$s/$s" "$c/images/$s"
    rm -rf "$dl/unpack-$s"
    drop_archive "$dl/$s.zip"
}

coco_run() {
    local s list c="$DATA_ROOT/coco"
    mkdir -p "$c" "$DATA_ROOT/downloads"
    for s in "${COCO_SPLITS[@]}"; do
        coco_split_ready "$s" && continue
        if coco_needs_labels "$s"; then
            if [ "$LABELS_MODE" = download ]; then coco_labels_download; else coco_labels_convert "$s"; fi
        fi
        coco_images "$s"
        list="$(coco_list "$s")"
        [ "$list" = "$c/$s.txt" ] || mv "$list" "$c/$s.txt"
        log_info "ready: $c/images/$s, $c/labels/$s, $c/$s.txt ($(wc -l <"$c/$s.txt") images)"
    done
    write_data_yaml coco "$c"
}

# Remove what an interrupted unpack or conversion left (archives and .part files stay for resuming).
cleanup_staging() {
    local d
    for d in "$DATA_ROOT"/downloads/unpack-* "$DATA_ROOT"/downloads/convert-*; do
        [ -e "$d" ] && rm -rf "$d"
    done
    rmdir "$DATA_ROOT/downloads" "$WEIGHTS_DIR/downloads" 2>/dev/null || true
}
