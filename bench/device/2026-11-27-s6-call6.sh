# Session 6, call 6 (one H200, warm from call 5, assets already built there). Issue 3: the stock reference and the
# compiled recipe with the last 10 layers not checkpointed, in one invocation (the ratio and loss parity in one run).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 230 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 8 \
    --warmup 3 --timeout 120 --results $OUT/train_throughput.jsonl --variants stock-fp16,qlora-compile-keep10 > $OUT/keep2.log 2>&1
echo "rc $?"; grep -v "it/s\]" $OUT/keep2.log | grep "bench\|Error" | tail -4; grep -A3 "^variant " $OUT/keep2.log
