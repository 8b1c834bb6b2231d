# Session 7, call 5 (one H200, right after call 4). Issue 4 at the full test-set size: the 500 rows tiled 23x
# (11,500 rows) at 131,072-token batches, row cap 512, the project path as evaluate.py runs it.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp"
timeout 230 $G --tile 23 --batch-size 512 --budgets 131072 --batch1-rows 16 --compare "" --skip sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen23.log 2>&1
echo "gen23 rc $?"; grep "/s " $OUT/gen23.log; tail -3 $OUT/gen23.log | grep -i error
