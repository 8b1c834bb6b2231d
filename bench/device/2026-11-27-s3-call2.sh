# 1 GPU (GPU 0; the other idle), issue 4: the generation bench after the right-padded flash prefill and with the model
# evaluate.py loads (fused GELU), an fp32 match check and a profile; then (issue 3) a profile of one training step
# without checkpointing at batch 16.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
timeout 380 python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl \
    --skip sorted_b64 --batch1-rows 24 --nf4-batch1-rows 8 --fp32-match-rows 24 --profile $OUT/generate_profile.txt \
    --output $OUT/generate_throughput.jsonl > $OUT/gen.log 2>&1
echo "gen rc $?"; grep -v "it/s\]\|Warning\|warn" $OUT/gen.log | tail -16
B="python3 bench/train_throughput.py --assets .device_assets --global_batch 32"
timeout 100 $B --steps 1 --warmup 1 --variants bf16-bs16-nogc-grouped-nodrop --timeout 90 --results $OUT/profile_run.jsonl > $OUT/tp.log 2>&1
echo "train build rc $?"
timeout 110 python3 bench/train_throughput.py --child bf16-bs16-nogc-grouped-nodrop --work /tmp/sumtune-bench --steps 2 \
    --warmup 1 --global_batch 32 --profile $OUT/train_profile_bs16_nogc.txt > $OUT/tprof.log 2>&1
echo "train profile rc $?"; head -1 $OUT/train_profile_bs16_nogc.txt
