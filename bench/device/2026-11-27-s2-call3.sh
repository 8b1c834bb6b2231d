# 2-GPU machine, GPU 0 alone first: the issue 3 levers again without the GPU tests beside them (they slowed call 1's
# sweep); then data-parallel evaluation (issue 4) at 5,000 rows, 1 vs 2 processes.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 330 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 --warmup 1 --timeout 100 --results $OUT/train_throughput.jsonl --variants stock-fp16,qlora,bf16-bs32-gc-grouped-nodrop,bf16-bs16-gc4-grouped-nodrop,bf16-bs32-gc2-grouped-nodrop,bf16-bs16-nogc-grouped-nodrop > $OUT/sweep.log 2>&1; echo "sweep rc $?"
timeout 230 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 10 --results $OUT/eval_dp.jsonl > $OUT/eval_dp.log 2>&1; echo "eval dp rc $?"
grep -v "it/s\]" $OUT/sweep.log | tail -9; grep -v "it/s" $OUT/eval_dp.log | tail -5
