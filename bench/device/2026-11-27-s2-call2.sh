# 2-GPU machine (issue 6): the bf16 recipe on one GPU, then under DDP on two (same per-GPU settings, 50 steps), then
# FSDP + QLoRA for 100 steps at its recipe's per-GPU batch of 8.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
CUDA_VISIBLE_DEVICES=0 timeout 100 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 20 --warmup 1 --timeout 95 --variants qlora --results $OUT/multi.jsonl > $OUT/multi1.log 2>&1; echo "1-gpu rc $?"
timeout 200 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 49 --warmup 1 --timeout 195 --gpus 2 --variants qlora-ddp --results $OUT/multi.jsonl > $OUT/multi2.log 2>&1; echo "ddp rc $?"
timeout 270 python3 bench/train_throughput.py --assets .device_assets --global_batch 8 --steps 99 --warmup 1 --timeout 265 --gpus 2 --variants qlora-fsdp --results $OUT/multi.jsonl > $OUT/multi3.log 2>&1; echo "fsdp rc $?"
for f in $OUT/multi1.log $OUT/multi2.log $OUT/multi3.log; do grep -v "it/s\]" $f | tail -3; done
mkdir -p $OUT/logs && cp /tmp/sumtune-bench/logs/*.log $OUT/logs/ 2>/dev/null; true
