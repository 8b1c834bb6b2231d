# Session 7, call 6 (2 x H200 of one host). Issue 4: the real evaluate.py with the new generation path (in-place
# rotary, matmul decoding attention, CUDA graph of the decoding step) on 5,000 rows (the sample 10x), 131,072-token
# batches of at most 512 rows: one process on one GPU, then accelerate launch on both.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 420 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 10 --max-batch-tokens 131072 \
    --batch-size 512 --results $OUT/generate_throughput.jsonl > $OUT/dp.log 2>&1
echo "dp rc $?"; tail -5 $OUT/dp.log; grep -h "summaries/s\|Generated" /tmp/sumtune-eval-dp/eval-*.log | tail -4
