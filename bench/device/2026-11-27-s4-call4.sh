# 2-GPU machine. Issue 6: 1 GPU vs DDP with causal_only_training_attention on the rows repeated to 6,400, alternated
# 3 times (the first 1-GPU run of a fresh machine has always been slow; medians at the end). Then issue 3, GPU 0:
# the stock reference and the recipe on those same rows in one invocation (ratio and loss vs stock on equal rows).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
timeout 345 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows \
    --variants qlora-large-causal,qlora-ddp-large-causal --global_batch 32 --warmup 2 --steps 12 --repeats 3 \
    --timeout 110 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | grep -A4 "^variant  .*median"
CUDA_VISIBLE_DEVICES=0 timeout 175 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 6 \
    --warmup 1 --timeout 150 --results $OUT/train_throughput.jsonl --variants stock-fp16-large,qlora-large-causal > $OUT/ref.log 2>&1
echo "ref rc $?"; grep -v "it/s\]" $OUT/ref.log | grep "bench\|Error" | tail -4; grep -A3 "^variant " $OUT/ref.log
