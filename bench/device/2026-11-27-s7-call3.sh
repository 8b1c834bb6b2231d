# Session 7, call 3 (one H200). Issue 4: the decoding step as a CUDA graph (new default) with the matmul attention;
# a warm-up pass before timing; the default alternated twice with eager (no graph), flash and sdpa decoding on 2,000
# tiled rows at 131,072-token batches; NF4 + adapter on 500 rows (4-bit, dequantized, dequantized + merged); GPU tests of the decode attention.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp"
timeout 230 $G --budgets 65536 --rerun --batch1-rows 24 --nf4-batch1-rows 8 --compare "" --skip sorted_b64,stock_b64,project_stock_act \
    --profile $OUT/profile_generate_500_graph.txt --profile-rows 0 > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log; tail -3 $OUT/gen.log | grep -i error
timeout 230 $G --tile 4 --batch-size 512 --budgets 131072 --compare eager,flash,sdpa --repeats 2 --skip stock_b1,sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen6.log 2>&1
echo "gen6 rc $?"; grep "/s " $OUT/gen6.log; tail -3 $OUT/gen6.log | grep -i error
grep "sumtune\.\|Self CUDA time total" $OUT/profile_generate_500_graph.txt | cut -c1-70,100-200
