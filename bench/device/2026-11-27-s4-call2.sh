# 2-GPU machine, one bench per GPU at the same time (host: 32 cores; each bench compares within itself).
# GPU 0 (issue 3): causal_only_training_attention (no padding mask in training: SDPA flash instead of cuDNN with a
# mask) on the recipe, without checkpointing at batch 16, checkpointing every 2nd layer, and the T4 recipe under its
# 15 GiB cap (worst-case lengths too), beside the stock reference.
# GPU 1 (issue 4): generation: the NF4 + adapter rate after the prefill change, same-run reruns (default, without
# cuDNN attention, with deterministic algorithms) and the speed without cuDNN attention.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 timeout 545 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 \
    --warmup 1 --timeout 110 --results $OUT/train_throughput.jsonl \
    --variants stock-fp16,qlora,qlora-causal,bf16-bs16-nogc-grouped-nodrop,bf16-bs16-nogc-grouped-nodrop-causal,bf16-bs16-gc2-grouped-nodrop-causal,qlora-t4-causal,qlora-t4-long-causal \
    > $OUT/sweep.log 2>&1; echo "sweep rc $?" > $OUT/sweep.rc) &
export CUDA_VISIBLE_DEVICES=1
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --budgets 65536 --rerun --output $OUT/generate_throughput.jsonl"
timeout 230 $G --skip sorted_b64,project_stock_act --batch1-rows 16 --nf4-batch1-rows 6 > $OUT/gen_a.log 2>&1; echo "gen a rc $?"
timeout 130 $G --no-cudnn-sdp --skip sorted_b64,stock_b64,project_stock_act,nf4 --batch1-rows 16 > $OUT/gen_b.log 2>&1; echo "gen b rc $?"
timeout 150 $G --deterministic --skip sorted_b64,stock_b64,project_stock_act,nf4 --batch1-rows 16 > $OUT/gen_c.log 2>&1; echo "gen c rc $?"
wait; cat $OUT/sweep.rc
grep "/s \|rerun\|same" $OUT/gen_?.log | tail -20; grep -i "error" $OUT/gen_?.log | tail -3
grep -v "it/s\]" $OUT/sweep.log | grep "bench\|Error" | tail -12
