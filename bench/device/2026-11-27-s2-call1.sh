# 2-GPU machine, two lanes at once. GPU 0: issue 3 levers (less recompute: no LoRA dropout, checkpointing on every
# n-th layer, TRL's selective checkpointing) against the stock script, one invocation. GPU 1: `make test-gpu` at 200 steps.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=1 SUMTUNE_GPU_STEPS=200 SUMTUNE_ASSETS=.device_assets timeout 545 python3 -m pytest -q -rA -m gpu tests/test_gpu.py > $OUT/test_gpu.log 2>&1; echo "test-gpu rc $?" >> $OUT/test_gpu.log) &
CUDA_VISIBLE_DEVICES=0 timeout 545 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 --warmup 1 --timeout 150 --results $OUT/train_throughput.jsonl --variants stock-fp16,qlora,bf16-bs16-nogc-grouped-nodrop,bf16-bs32-gc2-grouped-nodrop,bf16-bs16-gc2-grouped-nodrop,bf16-bs32-gc-grouped-nodrop,bf16-bs16-gc4-grouped-nodrop,bf16-bs32-sac-grouped-nodrop > $OUT/sweep.log 2>&1; echo "sweep rc $?"
wait
grep -v "it/s\]" $OUT/sweep.log | tail -14
grep -E "passed|failed|PASSED|FAILED|Error|rc " $OUT/test_gpu.log | tail -12
mkdir -p $OUT/logs && cp /tmp/sumtune-bench/logs/*.log $OUT/logs/ 2>/dev/null; true
