# Session 5, call 4 (2-GPU host). Issue 6 with compile_decoder_layers now compiled with dynamic shapes from the start
# (call 2's DDP run recompiled inside its timed steps): 1 GPU vs DDP, same rows (repeated to 6,400), compiled.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TORCH_LOGS=recompiles
timeout 280 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows \
    --variants qlora-large-compile,qlora-ddp-large-compile --global_batch 32 --warmup 4 --steps 12 --repeats 2 \
    --timeout 120 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | grep -A4 "^variant  .*median"; grep "bench" $OUT/ddp.log | tail -5
cp /tmp/sumtune-bench/logs/*.log $OUT/ 2>/dev/null; grep -c "Recompiling" $OUT/qlora-*compile.log
