# 2-GPU machine (issue 6): DDP against one GPU over the same rows (1-GPU 2+28 steps of 32 = DDP 1+14 steps of 2x32),
# then two independent 1-GPU runs at once, one per GPU (no DDP): does sharing the host alone slow each GPU?
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
B="python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --timeout 120"
CUDA_VISIBLE_DEVICES=0 timeout 150 $B --warmup 2 --steps 28 --variants qlora --results $OUT/multi.jsonl > $OUT/a.log 2>&1; echo "1-gpu rc $?"
timeout 120 $B --warmup 1 --steps 14 --gpus 2 --variants qlora-ddp --results $OUT/multi.jsonl > $OUT/b.log 2>&1; echo "ddp rc $?"
CUDA_VISIBLE_DEVICES=0 timeout 120 $B --warmup 2 --steps 28 --variants qlora --results $OUT/concurrent0.jsonl > $OUT/c0.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout 120 $B --warmup 2 --steps 28 --variants qlora --work /tmp/sumtune-bench --results $OUT/concurrent1.jsonl > $OUT/c1.log 2>&1; wait; echo "concurrent done"
for f in a b c0 c1; do grep "tok/s," $OUT/$f.log | tail -1; done
