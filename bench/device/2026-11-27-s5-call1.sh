# Session 5, call 1 (GPU 0 alone). Issue 3: does torch.compile of the decoder layers (compile_decoder_layers) pay?
# The stock reference, the recipe and the recipe compiled, XSum-length rows, one invocation; 3 warm-up steps (the
# compiled variant compiles in steps 1-2), 6 timed. Then larger micro-batches compiled.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
CUDA_VISIBLE_DEVICES=0 timeout 330 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 6 \
    --warmup 3 --timeout 200 --results $OUT/train_throughput.jsonl --variants stock-fp16,qlora,qlora-compile > $OUT/real.log 2>&1
echo "real rc $?"; grep -v "it/s\]" $OUT/real.log | grep "bench\|Error" | tail -5; grep -A4 "^variant " $OUT/real.log
cp /tmp/sumtune-bench/logs/qlora-compile.log $OUT/ 2>/dev/null; grep -i "error\|graph break\|recompil" $OUT/qlora-compile.log | head -5
CUDA_VISIBLE_DEVICES=0 timeout 200 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 6 \
    --warmup 3 --timeout 95 --results $OUT/train_throughput.jsonl \
    --variants bf16-bs64-gc-grouped-nodrop-causal-compile,bf16-bs16-gc2-grouped-nodrop-causal-compile > $OUT/levers.log 2>&1
echo "levers rc $?"; grep -A3 "^variant " $OUT/levers.log
