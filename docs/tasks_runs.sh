#!/usr/bin/env bash
# The exact runs behind the measured tables of docs/tasks.md (Figs. 2-4 on the two
# embedded models). Usage:  bash docs/tasks_runs.sh MODEL [PART...]
#   MODEL: smollm2-135m or gemma-3-270m
#   PART:  copy-score copy-generate count-score count-generate count-cot (default: all)
# Every command appends rows to OUT/rows.jsonl as they are computed: rerunning the
# script resumes where it stopped. Run on 2 shared CPU cores with one torch thread.
#
#   bash docs/tasks_runs.sh tables [--write|--check|--print]
# reads what the runs wrote under findings/ (committed; no model is loaded) and rewrites the
# tables of docs/tasks.md and the figures docs/img/tasks-*.png (docs/tasks_tables.py); a run
# that was not made, or has no row yet, shows as "not run".
set -euo pipefail
if [ "${1:-}" = tables ]; then
  shift
  exec env OMP_NUM_THREADS=1 nice -n 10 python "$(dirname "$0")/tasks_tables.py" "${@:---write}"
fi
M=${1:?model name}
shift || true
PARTS=${*:-copy-score copy-generate count-score count-generate count-cot}
OUT=${TL_TASKS_OUT:-findings}/$M
TG="nice -n 10 tl-glasses tasks --model $M --threads 1 --no-progress"

COPY_L=2,5,10,20,50,100,150,200,300
COPY_GEN_L=5,20,50,100,200
COUNT_L=2,5,10,20,30,50,75,100
COUNT_GEN_L=5,10,20,50,100
COT_L=5,10,20,50,100

for part in $PARTS; do
  case $part in
    copy-score)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_L --out $OUT/$task-score
        $TG --task $task --lengths $COPY_L --hint --out $OUT/$task-hint-score
        $TG --task $task --lengths $COPY_L --alternating --out $OUT/$task-alt-score
      done
      # App. C.5's prompt types (the paper ablates them on copy-last)
      $TG --task copy_last --lengths $COPY_L --prompt-type 1 --out $OUT/copy_last-type1-score
      $TG --task copy_last --lengths $COPY_L --prompt-type 2 --out $OUT/copy_last-type2-score
      ;;
    copy-generate)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --out $OUT/$task-gen
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --hint --out $OUT/$task-hint-gen
        $TG --task $task --lengths $COPY_GEN_L --scoring generate --max-new-tokens 24 --alternating --out $OUT/$task-alt-gen
      done
      ;;
    count-score)
      for mode in answer cot cot_fewshot; do
        for task in count_sum count_ones count_ones_zeros count_word; do
          $TG --task $task --lengths $COUNT_L --mode $mode --n-items 3 --out $OUT/$task-$mode-score
        done
      done
      ;;
    count-generate)
      for task in count_sum count_ones count_ones_zeros count_word; do
        $TG --task $task --lengths $COUNT_GEN_L --scoring generate --max-new-tokens 24 --n-items 3 \
          --out $OUT/$task-answer-gen
      done
      ;;
    count-cot)
      for mode in cot cot_fewshot; do
        for task in count_sum count_ones count_ones_zeros count_word; do
          $TG --task $task --lengths $COT_L --mode $mode --scoring generate --max-new-tokens 128 \
            --n-items 1 --out $OUT/$task-$mode-gen
        done
      done
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
