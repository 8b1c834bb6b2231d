# 1 GPU then 2 (issue 3, then 4): the recipe levers not yet measured on a GPU (checkpoint_keep_matmuls; no checkpointing
# at batch 8) beside the stock reference and the recipe, GPU 0 alone; then data-parallel evaluation with --recheck
# (1 process again on GPU 0 and on GPU 1: how much text differs between runs on its own).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 370 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 --warmup 1 \
    --timeout 100 --results $OUT/train_throughput.jsonl \
    --variants stock-fp16,qlora,bf16-bs8-nogc-grouped-nodrop,bf16-bs8-keepmm-grouped-nodrop,bf16-bs16-keepmm-grouped-nodrop,bf16-bs32-keepmm-grouped-nodrop \
    > $OUT/sweep.log 2>&1; echo "sweep rc $?"
timeout 200 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 2 --recheck --results $OUT/eval_dp.jsonl > $OUT/eval_dp.log 2>&1
echo "eval dp rc $?"
grep -v "it/s\]" $OUT/sweep.log | tail -9; grep -v "it/s" $OUT/eval_dp.log | tail -8
