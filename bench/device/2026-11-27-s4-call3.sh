# 2-GPU machine, GPU 0 only, one bench at a time (call 2 ran two benches at once and its rates are not comparable).
# Issue 4: generation with and without cuDNN attention (+ NF4 + adapter); issue 3: the recipe with and without
# causal_only_training_attention, beside the stock reference.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --budgets 65536 --rerun --output $OUT/generate_throughput.jsonl --batch1-rows 16"
timeout 120 $G --skip sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen_a.log 2>&1; echo "gen a rc $?"
timeout 170 $G --no-cudnn-sdp --skip sorted_b64,stock_b64,project_stock_act --nf4-batch1-rows 6 > $OUT/gen_b.log 2>&1; echo "gen b rc $?"
grep "/s " $OUT/gen_?.log
timeout 250 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 --warmup 1 --timeout 80 \
    --results $OUT/train_throughput.jsonl --variants stock-fp16,qlora,qlora-causal,bf16-bs16-nogc-grouped-nodrop-causal > $OUT/sweep.log 2>&1
echo "sweep rc $?"; grep -v "it/s\]" $OUT/sweep.log | grep "bench\|Error" | tail -8
