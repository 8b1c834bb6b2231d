# Session 5, call 3 (2-GPU host). Issue 4: the project path in bf16 and NF4 + adapter at 65,536- and 131,072-token
# batches (cuDNN attention off, the default), GPU 0 alone; then evaluate.py on 1 and 2 GPUs and again on each GPU
# (--recheck): data-parallel speed-up and cross-process reproducibility without cuDNN attention.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 230 python3 bench/generate_throughput.py --assets .device_assets/phi-2 \
    --data .device_assets/xsum_test_sample_500.jsonl --budgets 65536,131072 --output $OUT/generate_throughput.jsonl \
    --batch1-rows 16 --nf4-batch1-rows 6 --skip sorted_b64,stock_b64,project_stock_act > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log
timeout 330 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 6 --recheck \
    --results $OUT/generate_throughput.jsonl > $OUT/evaldp.log 2>&1
echo "evaldp rc $?"; tail -15 $OUT/evaldp.log
