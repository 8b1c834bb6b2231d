# 2-GPU machine: DDP and FSDP+QLoRA 100 steps vs one GPU at the same per-GPU settings; then data-parallel evaluation.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
timeout 300 bash -c "CUDA_VISIBLE_DEVICES=0 python3 bench/train_throughput.py --assets .device_assets --global_batch 8 --steps 20 --warmup 1 --timeout 80 --variants qlora-fsdp-settings --results $OUT/multi.jsonl > $OUT/multi1.log 2>&1; python3 bench/train_throughput.py --assets .device_assets --global_batch 8 --steps 99 --warmup 1 --timeout 125 --gpus 2 --variants qlora-fsdp-settings-ddp,qlora-fsdp --results $OUT/multi.jsonl > $OUT/multi2.log 2>&1"; echo "multi rc $?"
tail -6 $OUT/multi2.log; grep -h "rror" /tmp/sumtune-bench/logs/qlora-fsdp.log | tail -5 > $OUT/fsdp_errors.log
timeout 150 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 3 --results $OUT/eval_dp.jsonl > $OUT/eval_dp.log 2>&1; echo "eval dp rc $?"
grep -v "it/s" $OUT/eval_dp.log | tail -4
