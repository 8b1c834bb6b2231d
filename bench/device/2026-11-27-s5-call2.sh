# Session 5, call 2 (2-GPU host). Issue 3 over a whole length-grouped megabatch (the rows repeated to 6,400: 50 steps
# of 32 cover one 1,600-row megabatch, so XSum's length mix, not only its longest rows): the recipe and the recipe
# compiled on GPU 0 alone. Then issue 6: 1 GPU vs DDP, both compiled, same rows, alternated.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 300 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 48 \
    --warmup 2 --timeout 145 --results $OUT/train_throughput.jsonl --variants qlora-large,qlora-large-compile > $OUT/mega.log 2>&1
echo "mega rc $?"; grep -v "it/s\]" $OUT/mega.log | grep "bench\|Error" | tail -4; grep -A3 "^variant " $OUT/mega.log
timeout 270 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows \
    --variants qlora-large-compile,qlora-ddp-large-compile --global_batch 32 --warmup 4 --steps 12 --repeats 2 \
    --timeout 120 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | grep -A4 "^variant  .*median"; grep "bench" $OUT/ddp.log | tail -5
