# Session 7, call 7 (one H200). Issue 4, the match question with the final code (flash varlen removed): greedy
# tokens in float32 (no TF32) on 48 rows, stock generate() batch 1 and batch 64 against the project path (in-place
# rotary, matmul decoding attention, CUDA graph); plus the bf16 project path on 500 rows and the GPU tests of
# the decoding attention and the CUDA graph.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -k "decode_attention or cuda_graph" 2>&1 | tail -3
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp"
timeout 200 $G --budgets 65536 --fp32-match-rows 48 --compare "" --skip stock_b1,sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log; tail -3 $OUT/gen.log | grep -i error
