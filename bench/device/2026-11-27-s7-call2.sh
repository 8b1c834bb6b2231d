# Session 7, call 2 (one H200). Issue 4: decoding attention as two batched matrix products (the new default) against
# flash attention's varlen kernel and SDPA + mask, in one run; the done-flag read two steps late; NF4 + adapter:
# 4-bit, dequantized, dequantized + merged; the tiled 3,000 rows at two budgets; a profile of 500 rows; GPU unit
# tests of both decoding attentions.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k decode_attention 2>&1 | tail -3
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp"
timeout 240 $G --budgets 65536 --rerun --batch1-rows 24 --nf4-batch1-rows 8 --skip sorted_b64,stock_b64,project_stock_act \
    --profile $OUT/profile_generate_500_matmul.txt --profile-rows 0 > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log; tail -3 $OUT/gen.log | grep -i error
timeout 150 $G --tile 6 --batch-size 512 --budgets 65536,131072 --other-decode-attention flash --skip stock_b1,sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen6.log 2>&1
echo "gen6 rc $?"; grep "/s " $OUT/gen6.log; tail -3 $OUT/gen6.log | grep -i error
head -30 $OUT/profile_generate_500_matmul.txt | cut -c1-70,100-200
