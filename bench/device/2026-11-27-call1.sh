# 2-GPU machine: train bench on GPU 0 while the GPU tests run on GPU 1; then data-parallel evaluation on both.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi -L
(CUDA_VISIBLE_DEVICES=0 timeout 400 python3 bench/train_throughput.py --assets .device_assets --global_batch 32 --steps 4 --warmup 1 --timeout 150 \
  --variants stock-fp16,stock-bf16,qlora,qlora-t4,qlora-autocast-ln,bf16-bs16-nogc-grouped-gelu --results $OUT/train.jsonl > $OUT/train.log 2>&1; echo "train rc $?") &
(CUDA_VISIBLE_DEVICES=1 SUMTUNE_GPU_STEPS=200 SUMTUNE_ASSETS=.device_assets SUMTUNE_GPU_WORK=/tmp/gputests timeout 420 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc $?") &
wait
tail -12 $OUT/train.log; tail -5 $OUT/gpu_tests.log
timeout 170 python3 bench/eval_data_parallel.py --assets .device_assets --gpus 2 --repeat 6 --results $OUT/eval_dp.jsonl > $OUT/eval_dp.log 2>&1; echo "eval dp rc $?"
tail -4 $OUT/eval_dp.log
cp /tmp/sumtune-eval-dp/eval-2.log $OUT/eval2.log 2>/dev/null
