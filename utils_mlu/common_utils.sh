#!/usr/bin/env bash
# Shell helpers for benchmark scripts and prepare.sh. Source it: `. utils_mlu/common_utils.sh`.
#
#   log_info / log_warn / log_error MSG   timestamped messages on stderr
#   get_platform                  MLU370, MLU290, an NVIDIA model name, or CPU
#   get_platform_with_flag_name   the same as a flag-safe word (MLU370-X8 -> MLU370, '-' -> '_')
#   get_visible_cards             number of devices the runtime will show
#   perf_iters_rule [PLATFORM]    exports BENCHMARK_TOTAL_ITERS and MLU_ADAPTIVE_STRATEGY_COUNT
#   benchmark_log_field FILE KEY  last value of KEY in a benchmark log (JSON lines or pretty JSON)
#
# PROC_DRIVER_ROOT (default /proc/driver) is where the drivers publish device information;
# tests point it at a fake tree.

_log() {
    local level="$1"
    shift
    printf '%s [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$level" "$*" >&2
}
log_info() { _log INFO "$@"; }
log_warn() { _log WARN "$@"; }
log_error() { _log ERROR "$@"; }

# Value after the last ':' of the first line named $1 in the driver information files under $2.
_driver_field() {
    local name="$1" dir="$2" info line
    for info in "$dir"/*/information; do
        [ -r "$info" ] || continue
        while IFS= read -r line; do
            case "$line" in
                "$name"*:*)
                    line="${line##*:}"
                    line="${line#"${line%%[![:space:]]*}"}"
                    printf '%s\n' "${line%"${line##*[![:space:]]}"}"
                    return 0
                    ;;
            esac
        done <"$info"
    done
    return 1
}

get_platform() {
    local root="${PROC_DRIVER_ROOT:-/proc/driver}" name
    if name=$(_driver_field "Device name" "$root/cambricon/mlus"); then
        printf '%s\n' "${name%%-*}"
    elif name=$(_driver_field "Model" "$root/nvidia/gpus"); then
        printf '%s\n' "$name"
    else
        printf 'CPU\n'
    fi
}

get_platform_with_flag_name() {
    local name
    name=$(get_platform)
    case "$name" in
        MLU370*) name=MLU370 ;;
    esac
    name="${name//-/_}"
    printf '%s\n' "${name// /_}"
}

# Count like the runtimes parse: CN_, MLU_, then CUDA_VISIBLE_DEVICES; entries up to the first
# invalid one. Without any of them, count the devices the drivers publish.
get_visible_cards() {
    local var value item count=0 root="${PROC_DRIVER_ROOT:-/proc/driver}" dir
    for var in CN_VISIBLE_DEVICES MLU_VISIBLE_DEVICES CUDA_VISIBLE_DEVICES; do
        if [ -n "${!var+set}" ]; then
            value="${!var}"
            IFS=',' read -r -a items <<<"$value"
            for item in "${items[@]}"; do
                item="${item// /}"
                [[ "$item" =~ ^([0-9]+|[A-Za-z]+-[0-9A-Za-z-]+)$ ]] || break
                count=$((count + 1))
            done
            printf '%s\n' "$count"
            return 0
        fi
    done
    for dir in "$root"/cambricon/mlus/* "$root"/nvidia/gpus/*; do
        [ -d "$dir" ] && count=$((count + 1))
    done
    printf '%s\n' "$count"
}

# Benchmark length: 300 iterations with 100 warm-up on MLU290, otherwise 60 with 20 (Cambricon's
# rule). CATCH_MODEL_TOTAL_ITERS=N overrides the total and drops a single warm-up iteration.
perf_iters_rule() {
    local platform="${1:-$(get_platform)}" total=60 skip=20
    if [ "$platform" = "MLU290" ]; then
        total=300
        skip=100
    fi
    if [ -n "${CATCH_MODEL_TOTAL_ITERS:-}" ]; then
        if ! [[ "$CATCH_MODEL_TOTAL_ITERS" =~ ^[1-9][0-9]*$ ]]; then
            log_error "CATCH_MODEL_TOTAL_ITERS='$CATCH_MODEL_TOTAL_ITERS' must be a positive integer"
            return 2
        fi
        total="$CATCH_MODEL_TOTAL_ITERS"
        skip=1
    fi
    export BENCHMARK_TOTAL_ITERS="$total"
    export MLU_ADAPTIVE_STRATEGY_COUNT="$skip"
}

benchmark_log_field() {
    local file="$1" key="$2" value
    if [ ! -r "$file" ]; then
        log_error "benchmark log '$file' not found"
        return 2
    fi
    value=$(grep -o "\"$key\": *\(\"[^\"]*\"\|[^,}]*\)" "$file" | tail -n 1) || true
    if [ -z "$value" ]; then
        log_error "no '$key' in benchmark log '$file'"
        return 1
    fi
    value="${value#*:}"
    value="${value#"${value%%[![:space:]]*}"}"
    value="${value#\"}"
    printf '%s\n' "${value%\"}"
}
