#!/usr/bin/env bash
# The learning curve of docs/quality.md: for one model, at each training size, a sweep of learning rate and epochs
# scored on the validation rows (bench/quality_curve.json; Gemma: TUNE_FILE=bench/quality_curve_gemma.json), then the test rows with the best setting. The sweep's
# trainings run as JOBS processes side by side on one GPU; the test reuses the chosen training.
#   bench/quality_curve.sh tune smollm2-135m      # then: bench/quality_curve.sh test smollm2-135m
# Environment: RECIPE (default recipes/MODEL/qlora.yaml), MODEL_DIR (the model folder; default the recipe's), SIZES, JOBS, WORK, TRAIN_DATA, TEST_DATA, TUNE_FILE,
# RESULTS, TUNING_RESULTS, EXTRA_ARGS (more quality.py flags), DECODINGS, LARGEST (the size tested with every
# system and decoding; default the last of SIZES), PYTHON.
set -euo pipefail
phase=$1 model=$2
recipe=${RECIPE:-recipes/$model/qlora.yaml}
sizes=${SIZES:-250 1000 2758}
max_jobs=${JOBS:-6}
work=${WORK:-outputs/quality-curve}
sweep=${TUNE_FILE:-bench/quality_curve.json}
tuning=${TUNING_RESULTS:-bench/results/quality_tuning.jsonl}
python=${PYTHON:-python3}
# Decodings compared with greedy at the largest size (quality.py --decodings).
decodings=${DECODINGS-beam4=--num_beams 4;mbr8=--mbr_candidates 8}
common=(--recipe "$recipe" --train-data "${TRAIN_DATA:-../shared/data/xsum_nontest_3k.jsonl}"
        --test-data "${TEST_DATA:-../shared/data/xsum_test_sample_500.jsonl}" ${MODEL_DIR:+--model "$MODEL_DIR"}
        --tuning-results "$tuning" --results "${RESULTS:-bench/results/quality.jsonl}")
largest=${LARGEST:-${sizes##* }}
# One sweep shard or one test: quality.py on the work folder of this model and size.
point() {
  local size=$1; shift
  "$python" bench/quality.py "${common[@]}" --train-rows "$size" --work-dir "$work/$model-$size" \
    --note "curve $model $size" ${EXTRA_ARGS:-} "$@"
}
mkdir -p "$work"
case $phase in
  tune)
    for size in $sizes; do
      shards=$("$python" -c "import json; print(len(json.load(open('$sweep'))['$size']))")
      for ((i = 0; i < shards; i++)); do echo "$size $i/$shards"; done
    done > "$work/$model.shards"
    while read -r size shard; do
      while (($(jobs -rp | wc -l) >= max_jobs)); do wait -n || true; done
      point "$size" --tune "$sweep" --tune-shard "$shard" &
    done < "$work/$model.shards"
    wait
    ;;
  test)
    for size in $sizes; do
      if [ "$size" = "$largest" ]; then
        point "$size" --best-from "$tuning" --systems zero_shot,adapter,merged,lead --decodings "$decodings" &
      else
        point "$size" --best-from "$tuning" --systems adapter &
      fi
    done
    wait
    ;;
  *) echo "error: the first argument is tune or test, not $phase" >&2; exit 2 ;;
esac
