# 2-GPU machine (issue 6): 1 GPU vs DDP over the same rows on the training rows repeated to 6,400 (length-grouped
# megabatches as on a real dataset), the recipe as it is and with causal_only_training_attention (issue 3's new lever),
# alternated twice, medians at the end (1-GPU 2+12 steps of 32 rows = DDP 1+6 steps of 2x32 rows). Nothing else runs.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 545 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows \
    --variants qlora-large,qlora-ddp-large,qlora-large-causal,qlora-ddp-large-causal \
    --global_batch 32 --warmup 2 --steps 12 --repeats 2 --timeout 130 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | grep "bench\|median\|Error\|error" | tail -24
