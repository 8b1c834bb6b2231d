# Session 6, call 3 (2-GPU host). Issues 3 and 6: the recipe compiled, 1 GPU and DDP, on the long rows with warm-up
# past the dynamic-shape recompile (step 7 on one GPU, the 4th step per rank under DDP); then the GPU tests of the
# compiled recipe.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
timeout 330 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows \
    --variants qlora-large-compile,qlora-ddp-large-compile --global_batch 32 --warmup 10 --steps 12 --timeout 200 \
    --results $OUT/train_throughput.jsonl > $OUT/ddpc.log 2>&1
echo "ddpc rc $?"; grep -v "it/s\]" $OUT/ddpc.log | grep "bench\|Error" | tail -6; grep -A4 "^variant " $OUT/ddpc.log
grep -h "graphs_compiled\|step_seconds" $OUT/train_throughput.jsonl | python3 -c "import sys,json; [print(r['variant'], r.get('graphs_compiled_in_timed_steps'), r.get('graph_breaks'), r.get('step_seconds')) for r in map(json.loads, sys.stdin)]"
SUMTUNE_ASSETS=.device_assets CUDA_VISIBLE_DEVICES=0 timeout 230 python3 -m pytest -q -m gpu tests/test_gpu.py -k compiled -p no:cacheprovider 2>&1 | tail -5
