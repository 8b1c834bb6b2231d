#!/usr/bin/env bash
# One GPU call of the learning curve (docs/quality.md), run from the repository root on the device machine:
#   bash bench/quality_lease.sh build                    # both real models from GGUFs in /tmp/gguf (tokenizer probe)
#   bash bench/quality_lease.sh curve MODEL "SIZES" SWEEP_FILE [LARGEST]   # quality_curve.sh tune, then test
# The models are built with the carried, locked transformers (bench/device_env.sh): make_real_model.py refuses a
# tokenizer that fails its probe, so no row is measured with a wrongly rebuilt one. Trainings, tuning rows and models
# stay in /tmp between calls on a warm machine; result rows go to /tmp/qc and are copied to $OUT.
set -euo pipefail
source bench/device_env.sh
export WORK=/tmp/qc/work TUNING_RESULTS=/tmp/qc/quality_tuning.jsonl RESULTS=/tmp/qc/quality.jsonl PYTHON=python3
export TRAIN_DATA=.device_assets/xsum_nontest_3k.jsonl TEST_DATA=.device_assets/xsum_test_sample_500.jsonl
mkdir -p /tmp/qc /tmp/models
case $1 in
  build)
    for name in smollm2-135m:SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m:gemma-3-270m-q4_k_m.gguf; do
      [ -d "/tmp/models/${name%%:*}" ] || python3 scripts/make_real_model.py --model "${name%%:*}" \
        --gguf "/tmp/gguf/${name#*:}" --output_dir "/tmp/models/${name%%:*}"
    done
    ;;
  curve)
    model=$2
    MODEL_DIR=/tmp/models/$model SIZES=$3 TUNE_FILE=$4 LARGEST=${5:-none} JOBS=${JOBS:-6} \
      bash bench/quality_curve.sh tune "$model"
    MODEL_DIR=/tmp/models/$model SIZES=$3 TUNE_FILE=$4 LARGEST=${5:-none} bash bench/quality_curve.sh test "$model"
    ;;
esac
