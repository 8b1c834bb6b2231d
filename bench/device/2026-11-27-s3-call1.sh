# 2-GPU machine (issue 6): 1 GPU and DDP over the same rows, alternated three times, medians at the end
# (1-GPU 2+16 steps of 32 rows = DDP 1+8 steps of 2x32 rows). Nothing else runs on the host.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 560 python3 bench/train_throughput.py --assets .device_assets --variants qlora,qlora-ddp --gpus 2 --same_rows \
    --global_batch 32 --warmup 2 --steps 16 --repeats 3 --timeout 150 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | tail -14
