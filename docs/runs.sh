#!/usr/bin/env bash
# The task-suite runs on Qwen2.5-Coder-1.5B-Instruct behind docs/findings.md and the Qwen
# tables of docs/tasks.md. Results go to findings/qwen2.5-coder-1.5b/<run>/ (rows.jsonl
# appended as each item finishes: rerunning resumes, nothing is recomputed). Committed.
#
#   bash docs/runs.sh PART...       PART: time count-score copy-score copy-long copy-score10
#                                         count-gen copy-gen cot cot-long collapse commas global
#                                         theory oversquash report bench
#   DTYPE=bfloat16 bash docs/runs.sh ...   (only where bf16 was shown to answer as fp32)
#   COT_L=5,10,20 bash docs/runs.sh cot    (shorter lengths first: the cells fill breadth-first)
#
# Cost on 2 CPU cores (fp32, measured with `bash docs/runs.sh time`; see
# docs/findings.md): a teacher-forced counting item at n = 50 about 10 s, a copying item at
# 1,000 digits about 40 s and at 4,096 about 6 min; a CoT generation about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
M=${MODEL:-qwen2.5-coder-1.5b}
OUT=${TL_FINDINGS:-findings}/$M
TG="nice -n 5 tl-glasses tasks --model $M --threads ${THREADS:-2} --no-progress --dtype ${DTYPE:-float32}"

COUNT_L=2,3,5,7,10,15,20,30,50,75,100,150,200
COPY_L=2,5,10,20,50,100,200,300,500,1000,2000,4096
if [[ -n ${COPY_MAX:-} ]]; then
  COPY_L=$(tr , '\n' <<<"$COPY_L" | awk -v m="$COPY_MAX" '$1 <= m' | paste -sd,)
fi
COLLAPSE_L=${COLLAPSE_L:-16,64,256,1024,2048,4096,8192}
CL=(nice -n 5 tl-glasses collapse --model $M --no-progress --shift-floor ${SHIFT_FLOOR:-ends} --batch-floor none)
# Qwen's Fig. 5a/5b sweeps (to 8,192 tokens) were made without the position-shift floor, to save
# forwards: the `collapse` part resumes them with the same setting (a run refuses to mix settings)
SWEEP_FLOOR=${SHIFT_FLOOR:-$([[ $M == qwen* ]] && echo none || echo ends)}
COPY10_L=2,5,10,20,50,100,200,500,1000
GEN_L=3,5,7,10,15,20,30,50,75,100,150,200
COT_L=${COT_L:-5,10,20,50,100}

for part in "$@"; do
  case $part in
    time)
      for spec in "count_ones 50 score answer" "copy_last 1000 score answer" "count_ones 20 generate answer"; do
        set -- $spec
        s=$(date +%s)
        $TG --task "$1" --lengths "$2" --scoring "$3" --mode "$4" >/dev/null
        echo "one $1 item at n=$2 ($3, $4): $(( $(date +%s) - s )) s (model load included)"
      done
      ;;
    count-score)
      for task in count_sum count_ones count_ones_zeros count_word; do
        $TG --task $task --lengths $COUNT_L --n-items 10 --out $OUT/$task-answer-score
      done
      ;;
    copy-score)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_L --out $OUT/$task-score
        $TG --task $task --lengths $COPY_L --hint --out $OUT/$task-hint-score
        $TG --task $task --lengths $COPY_L --alternating --out $OUT/$task-alt-score
        $TG --task $task --lengths $COPY_L --period3 --out $OUT/$task-period3-score
      done
      $TG --task copy_last --lengths $COPY_L --prompt-type 1 --out $OUT/copy_last-type1-score
      $TG --task copy_last --lengths $COPY_L --prompt-type 2 --out $OUT/copy_last-type2-score
      ;;
    copy-long)
      # the paper's copying items only, to 4,096 digits (the conditions stop at COPY_MAX)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY_L --out $OUT/$task-score
      done
      ;;
    copy-score10)
      # ten distinct items per cell: the odd digit drawn from {0, 2..9} per item; beyond 1,000
      # digits three items per cell (the first three of the same seeded items: a forward at
      # 4,096 digits takes minutes here). COPY10_LONG=none skips them.
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY10_L --odd-digit random --n-items 10 --out $OUT/$task-odd-score
      done
      if [[ ${COPY10_LONG:-2000,4096} != none ]]; then
        for n in $(tr , ' ' <<<"${COPY10_LONG:-2000,4096}"); do  # both tasks at a length before the next
          for task in copy_last copy_first; do
            $TG --task $task --lengths $n --odd-digit random --n-items 3 --out $OUT/$task-odd-score
          done
        done
      fi
      ;;
    count-gen)
      for task in count_sum count_ones count_ones_zeros count_word; do
        $TG --task $task --lengths $GEN_L --scoring generate --n-items 10 --out $OUT/$task-answer-gen
      done
      ;;
    copy-gen)
      for task in copy_last copy_first; do
        $TG --task $task --lengths $COPY10_L --odd-digit random --n-items 10 --scoring generate \
          --out $OUT/$task-odd-gen
      done
      ;;
    cot)
      for mode in cot cot_fewshot; do
        for task in count_sum count_ones count_ones_zeros count_word; do
          $TG --task $task --lengths $COT_L --mode $mode --scoring generate --max-new-tokens 512 \
            --n-items 3 --out $OUT/$task-$mode-gen
        done
      done
      ;;
    cot-long)
      # the plain-CoT cell whose listing outgrows 512 new tokens, rerun with a 2,048-token bound
      # (the `(2,048-token bound)` row of docs/findings.md; about half an hour)
      $TG --task count_ones_zeros --lengths 50 --mode cot --scoring generate --max-new-tokens 2048 \
        --n-items 3 --out $OUT/count_ones_zeros-cot-gen2048
      ;;
    collapse)
      # Fig. 5a/5b: real fp32 and real bf16 to the longest length (BF16_MAX caps bf16 in
      # tokens, prompt included, on a CPU without bf16 units, where bf16 is slower than fp32),
      # and fp32 rounded to bf16 and fp16 (the estimate) at every length
      for fam in ${FAMILIES:-ones digits_end_one}; do
        "${CL[@]}" --shift-floor $SWEEP_FLOOR --family $fam --lengths $COLLAPSE_L --dtype fp32 --dtype bf16 \
          --max-tokens bf16=${BF16_MAX:-8400} --round-to bf16 --round-to fp16 --out $OUT/collapse-$fam
      done
      ;;
    commas)
      # Fig. 5c/d: the copying prompt with and without a comma every 3 digits
      "${CL[@]}" --family copy_last --lengths ${COMMAS_L:-16,64,256,1024} --dtype fp32 \
        --round-to bf16 --round-to fp16 --mitigation separators:3 --out $OUT/collapse-commas
      ;;
    global)
      # App. C.6 (models with native local layers): all-global vs native, ten random pairs
      for seed in 0 1 2 3 4 5 6 7 8 9; do
        "${CL[@]}" --family digits_end_one --seed $seed --lengths ${GLOBAL_L:-256,512,1024,2048} \
          --dtype fp32 --round-to bf16 --mitigation global_attention --out $OUT/global-seed$seed
      done
      ;;
    theory)
      # Figs. 8-10 (model-free): the synthetic decoder, float64
      nice -n 5 tl-glasses theory fig8 fig10 --out ${TL_FINDINGS:-findings}/synthetic/theory
      ;;
    oversquash)
      # Thm 5.1 / Prop. 5.2: bound vs gradient sensitivity, U-shape and first-token mass vs
      # depth over 20 copying prompts (copy_last and copy_first, 4..40 digits)
      nice -n 5 tl-glasses paths --model $M --study copy --lengths 4:40:4 --method hutchinson \
        --probes ${PROBES:-16} --out $OUT/oversquash-copy
      ;;
    report)
      s=$(date +%s)
      nice -n 5 tl-glasses report --model $M --profile quick --no-progress --out $OUT/report-quick
      echo "report --profile quick on $M: $(( $(date +%s) - s )) s wall" | tee $OUT/report-quick/wall.txt
      ;;
    bench)
      MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 nice -n 5 python benchmarks/run.py --only qwen
      mkdir -p $OUT/bench && cp benchmarks/results/qwen.json $OUT/bench/qwen.json
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
