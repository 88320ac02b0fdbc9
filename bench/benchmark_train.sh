#!/usr/bin/env bash
# Training throughput benchmark: runs yolov5/train.py for a fixed number of iterations with
# BENCHMARK_LOG set (utils_mlu/metric.py appends one JSON line per run) and prints the throughput
# read back from that line.
#
#   bench/benchmark_train.sh --model yolov5s --batch 16 --precision amp --device mlu --cards 4
#   bench/benchmark_train.sh --device cpu --data demo.yaml --img 128 --batch 4 --iters 5 -- --workers 0
#
# Options (defaults in brackets):
#   --model NAME      model cfg models/NAME.yaml, trained from scratch [yolov5s]
#   --batch N         batch size PER CARD [16]; train.py gets N x cards (its --batch-size is total)
#   --precision P     fp32 | amp [fp32]; amp is --pyamp (fp16 on MLU, bf16 on CPU, fp16 on CUDA)
#   --device D        cpu | cuda | mlu [from the platform: mlu on an MLU machine, cuda on an
#                     NVIDIA one, else cpu]
#   --cards N         processes, one card each; N > 1 launches torchrun [1]
#   --data FILE       dataset yaml (coco128.yaml, demo.yaml, ...) [coco128.yaml]
#   --img N           image size [640]
#   --iters N         timed run length [BENCHMARK_TOTAL_ITERS from perf_iters_rule: 60, 300 on MLU290]
#   --workers N       dataloader workers per process [8]
#   --log FILE        benchmark log to append to [$BENCHMARK_LOG, else <repo>/runs/benchmark/benchmark_log]
#   --project DIR     run directory parent [<repo>/runs/benchmark]
#   -- ARGS...        passed on to train.py unchanged
#
# Environment: MLU_ADAPTIVE_STRATEGY_COUNT (warm-up iterations dropped; default from
# perf_iters_rule, 20), CATCH_MODEL_TOTAL_ITERS (Cambricon's override of the run length),
# DATASET_NAME (the log's dataset field; default the data yaml's name), PYTHON (interpreter;
# default <repo>/.venv/bin/python when present, else python3). On MLU, consider
# ENABLE_FALLBACK_TO_CPU=0: torch_mlu 2.x otherwise runs ops without an MLU kernel on the CPU,
# silently apart from a warning, which makes the throughput meaningless.
#
# The run uses --skip (no validation, no checkpoints) and --weights '' --cfg NAME.yaml. Exit
# status: train.py's when it fails (2 for bad input), 2 for bad options here, 1 when the run
# wrote no valid log line.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR/.. source=utils_mlu/common_utils.sh
. "$REPO/utils_mlu/common_utils.sh"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die_usage() {
    log_error "$*"
    log_error "see: $0 --help"
    exit 2
}

positive_int() {  # NAME VALUE
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die_usage "$1 '$2' must be a positive integer"
}

model=yolov5s batch=16 precision=fp32 device="" cards=1 data=coco128.yaml img=640 iters=""
workers=8 log="${BENCHMARK_LOG:-}" project="$REPO/runs/benchmark"
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        --model | --batch | --precision | --device | --cards | --data | --img | --iters | \
            --workers | --log | --project)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            case "$1" in
                --model) model="$2" ;;
                --batch) batch="$2" ;;
                --precision) precision="$2" ;;
                --device) device="$2" ;;
                --cards) cards="$2" ;;
                --data) data="$2" ;;
                --img) img="$2" ;;
                --iters) iters="$2" ;;
                --workers) workers="$2" ;;
                --log) log="$2" ;;
                --project) project="$2" ;;
            esac
            shift 2 ;;
        *) die_usage "unknown option '$1' (train.py options go after --)" ;;
    esac
done

[[ "$model" =~ ^[A-Za-z0-9_.-]+$ ]] || die_usage "--model '$model' must be a cfg name such as yolov5s"
model="${model%.yaml}"
positive_int --batch "$batch"
positive_int --cards "$cards"
positive_int --img "$img"
[[ "$workers" =~ ^[0-9]+$ ]] || die_usage "--workers '$workers' must be a whole number"
case "$precision" in fp32 | amp) ;; *) die_usage "--precision '$precision': use fp32 or amp" ;; esac

platform="$(get_platform)"
if [ -z "$device" ]; then
    case "$platform" in
        MLU*) device=mlu ;;
        CPU) device=cpu ;;
        *) device=cuda ;;
    esac
fi
case "$device" in cpu | cuda | mlu) ;; *) die_usage "--device '$device': use cpu, cuda or mlu" ;; esac
if [ "$device" = cuda ] && [ "$precision" = fp32 ]; then
    # train.py follows upstream v6.0: CUDA always trains with AMP, there is no switch to turn it off.
    die_usage "--precision fp32 on CUDA is not possible: train.py always uses AMP on CUDA (upstream v6.0); use --precision amp"
fi
if [ "$device" != cpu ]; then
    visible="$(get_visible_cards)"
    if [ "$visible" -eq 0 ]; then
        log_warn "cannot count the visible $device cards (no visible-device variable, no driver information); train.py will check"
    elif [ "$cards" -gt "$visible" ]; then
        die_usage "--cards $cards but only $visible $device card(s) are visible; use --cards $visible or fewer"
    fi
fi

# Iteration rule: run length and warm-up from perf_iters_rule; an exported
# MLU_ADAPTIVE_STRATEGY_COUNT and --iters win over it.
user_warmup="${MLU_ADAPTIVE_STRATEGY_COUNT:-}"
perf_iters_rule "$platform" || exit 2
[ -n "$user_warmup" ] && export MLU_ADAPTIVE_STRATEGY_COUNT="$user_warmup"
[[ "$MLU_ADAPTIVE_STRATEGY_COUNT" =~ ^[0-9]+$ ]] ||
    die_usage "MLU_ADAPTIVE_STRATEGY_COUNT='$MLU_ADAPTIVE_STRATEGY_COUNT' must be a whole number"
iters="${iters:-$BENCHMARK_TOTAL_ITERS}"
positive_int --iters "$iters"
if [ "$iters" -le "$MLU_ADAPTIVE_STRATEGY_COUNT" ]; then
    die_usage "--iters $iters leaves nothing to time after $MLU_ADAPTIVE_STRATEGY_COUNT warm-up iterations (MLU_ADAPTIVE_STRATEGY_COUNT); use more iterations"
fi

if [ -z "$log" ]; then
    log="$project/benchmark_log"
fi
case "$log" in /*) ;; *) log="$PWD/$log" ;; esac  # train.py runs in yolov5/
case "$project" in /*) ;; *) project="$PWD/$project" ;; esac
mkdir -p "$(dirname "$log")"
dataset="${DATASET_NAME:-$(basename "${data%.yaml}")}"

if [ -n "${PYTHON:-}" ]; then
    python="$PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then
    python="$REPO/.venv/bin/python"
else
    python=python3
fi

train_args=(train.py --cfg "$model.yaml" --weights "" --data "$data" --imgsz "$img"
    --batch-size "$((batch * cards))" --device "$device" --workers "$workers"
    # One epoch has at least one batch, so `iters` epochs always reach --iters.
    --epochs "$iters" --iters "$iters" --skip
    --project "$project" --name "${model}_${precision}_${device}_${cards}c_b${batch}" --exist-ok)
[ "$precision" = amp ] && train_args+=(--pyamp)
train_args+=("${extra[@]}")
if [ "$cards" -gt 1 ]; then
    cmd=("$python" -m torch.distributed.run --standalone --nproc_per_node "$cards" "${train_args[@]}")
else
    cmd=("$python" "${train_args[@]}")
fi

lines_before=0
[ -f "$log" ] && lines_before="$(wc -l <"$log")"
log_info "platform $platform; $model $precision on $cards x $device, batch $batch per card, $iters iterations ($MLU_ADAPTIVE_STRATEGY_COUNT warm-up)"
log_info "running: $(printf '%q ' "${cmd[@]}")"
status=0
(cd "$REPO/yolov5" && BENCHMARK_LOG="$log" DATASET_NAME="$dataset" "${cmd[@]}") || status=$?
if [ "$status" -ne 0 ]; then
    log_error "train.py failed (exit $status); no benchmark result"
    exit "$status"
fi

lines_after=0
[ -f "$log" ] && lines_after="$(wc -l <"$log")"
if [ "$lines_after" -le "$lines_before" ]; then
    log_error "train.py finished but appended nothing to $log"
    exit 1
fi

# Every field configs.json names for BENCHMARK_LOG must be in the line just written.
mapfile -t fields < <("$python" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))["BENCHMARK_LOG"]))' \
    "$REPO/utils_mlu/configs.json")
for field in "${fields[@]}"; do
    value="$(benchmark_log_field "$log" "$field")" || { log_error "the log line lacks '$field'"; exit 1; }
    log_info "  $field: $value"
done
run_status="$(benchmark_log_field "$log" status)"
if [ "$run_status" != ok ]; then
    log_error "benchmark not usable: $run_status"
    exit 1
fi
throughput="$(benchmark_log_field "$log" throughput)"
printf 'throughput: %s images/s (net %s, precision %s, batch_size %s x %s card(s), batch_time_avg %s s, %s iterations timed after %s warm-up, device %s, log %s)\n' \
    "$throughput" "$(benchmark_log_field "$log" net)" "$(benchmark_log_field "$log" precision)" \
    "$(benchmark_log_field "$log" batch_size)" "$(benchmark_log_field "$log" cards)" \
    "$(benchmark_log_field "$log" batch_time_avg)" "$(benchmark_log_field "$log" iterations)" \
    "$(benchmark_log_field "$log" warmup_iterations)" "$(benchmark_log_field "$log" device)" "$log"
