# Session 6, call 1 (GPU 0 alone). Issue 3: does compiling let the recipe drop checkpointing at <= 40 GiB and pass
# 18,000 tokens/s? XSum-length rows, 3 warm-up steps (compiles and the dynamic-shape recompile fall in them), 8 timed.
# The eager recipe runs first: the first run on a fresh machine has been 12-28% slow, so it must not be the reference.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
CUDA_VISIBLE_DEVICES=0 timeout 560 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 8 \
    --warmup 3 --timeout 200 --results $OUT/train_throughput.jsonl \
    --variants qlora,stock-fp16,qlora-compile,bf16-bs16-nogc-grouped-nodrop-causal-compile,bf16-bs8-nogc-grouped-nodrop-causal-compile,bf16-bs16-nogc-grouped-nodrop-causal \
    > $OUT/real.log 2>&1
echo "real rc $?"; grep -v "it/s\]" $OUT/real.log | grep "bench\|Error" | tail -8; grep -A8 "^variant " $OUT/real.log
for f in /tmp/sumtune-bench/logs/*compile.log; do echo "== $f"; grep -i "error\|graph break\|recompil\|out of memory" $f | head -3; done
