# Session 6, call 4 (GPU 0 alone). Issue 3: the recipe eager and compiled over one whole length-grouped megabatch
# (XSum's length mix), warm-up (8 steps) past the compiled layers' recompile at step 7.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 280 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --warmup 8 \
    --steps 42 --timeout 160 --variants qlora-large,qlora-large-compile --results $OUT/train_throughput.jsonl > $OUT/mega.log 2>&1
echo "mega rc $?"; grep -v "it/s\]" $OUT/mega.log | grep "bench\|Error" | tail -4; grep -A3 "^variant " $OUT/mega.log
python3 -c "import sys,json; [print(r['variant'], r.get('graphs_compiled_in_timed_steps'), r.get('step_seconds')) for r in map(json.loads, open('$OUT/train_throughput.jsonl'))]"
