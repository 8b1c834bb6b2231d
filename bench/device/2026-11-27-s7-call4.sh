# Session 7, call 4 (one H200). Issue 4 with Phi's rotary embedding applied in place (new default, bitwise the same):
# 500 rows (stock batch 1 on 24 rows as the match reference, the project path, NF4 + adapter: 4-bit, dequantized,
# dequantized + merged); then on 2,000 tiled rows at 131,072-token batches the default alternated twice with
# cat_rotary (transformers' rotary) and eager (no CUDA graph); GPU unit tests (decode attention, CUDA graph).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "decode_attention or cuda_graph" 2>&1 | tail -3
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp"
timeout 200 $G --budgets 65536 --batch1-rows 24 --nf4-batch1-rows 8 --compare "" --skip sorted_b64,stock_b64,project_stock_act \
    --profile $OUT/profile_generate_500_fused_rotary.txt --profile-rows 0 > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log; tail -3 $OUT/gen.log | grep -i error
timeout 200 $G --tile 4 --batch-size 512 --budgets 131072 --compare cat_rotary,eager --repeats 2 --skip stock_b1,sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen4.log 2>&1
echo "gen4 rc $?"; grep "/s " $OUT/gen4.log; tail -3 $OUT/gen4.log | grep -i error
grep "sumtune\.\|Self CUDA time total\|aten::cat " $OUT/profile_generate_500_fused_rotary.txt | cut -c1-70,100-200
