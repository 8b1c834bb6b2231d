# Session 6, call 5 (GPU 0 alone; the session's last ~5 device minutes). Issue 3: the compiled recipe with the last 10
# decoder layers not checkpointed (uncheckpointed_layers 10, estimated ~37 GiB peak) against the compiled recipe, on
# XSum-length rows, 3 + 8 steps as in call 1. The new variant runs first (a fresh machine's first run is slow).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 245 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 8 \
    --warmup 3 --timeout 110 --results $OUT/train_throughput.jsonl --variants qlora-compile-keep10,qlora-compile > $OUT/keep.log 2>&1
echo "keep rc $?"; grep -v "it/s\]" $OUT/keep.log | grep "bench\|Error" | tail -4; grep -A3 "^variant " $OUT/keep.log
