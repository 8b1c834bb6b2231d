# 1 GPU (issue 4): does the same generation run give the same tokens twice (default, then deterministic algorithms)?
# And the adapter on the NF4 base after the prefill change (call 2 ran out of time before it).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --budgets 65536 --rerun"
timeout 200 $G --skip stock_b1,stock_b64,project_stock_act,sorted_b64 --nf4-batch1-rows 8 --output $OUT/generate_throughput.jsonl > $OUT/gen_a.log 2>&1; echo "a rc $?"
timeout 130 $G --deterministic --skip stock_b1,stock_b64,project_stock_act,sorted_b64,nf4 --output $OUT/generate_throughput.jsonl > $OUT/gen_b.log 2>&1; echo "b rc $?"
grep "/s " $OUT/gen_a.log $OUT/gen_b.log; grep -i "error" $OUT/gen_b.log | tail -3
