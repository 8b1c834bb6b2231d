# Session 6, call 2 (2-GPU host). Issue 4 on GPU 0 alone, cuDNN attention off for stock and project alike: bf16 and
# the adapter on the NF4 base, then with the base dequantized once (evaluate.py --dequantize_4bit_base); then the
# bf16 path over the 500 rows tiled 6 times at evaluate.py's row cap (256). Issue 6: DDP vs 1 GPU, the recipe as it
# ships (DDP now deals each step's rows so both ranks' batches are equally long), alternated twice.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device_assets/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
G="python3 bench/generate_throughput.py --assets .device_assets/phi-2 --data .device_assets/xsum_test_sample_500.jsonl --output $OUT/generate_throughput.jsonl --no-cudnn-sdp --budgets 65536"
CUDA_VISIBLE_DEVICES=0 timeout 200 $G --rerun --batch1-rows 16 --nf4-batch1-rows 6 --skip sorted_b64,stock_b64,project_stock_act > $OUT/gen.log 2>&1
echo "gen rc $?"; grep "/s " $OUT/gen.log
CUDA_VISIBLE_DEVICES=0 timeout 120 $G --tile 6 --batch-size 256 --skip stock_b1,sorted_b64,stock_b64,project_stock_act,nf4 > $OUT/gen6.log 2>&1
echo "gen6 rc $?"; grep "/s " $OUT/gen6.log
timeout 300 python3 bench/train_throughput.py --assets .device_assets --gpus 2 --same_rows --variants qlora-large,qlora-ddp-large \
    --global_batch 32 --warmup 2 --steps 12 --repeats 2 --timeout 140 --results $OUT/train_throughput.jsonl > $OUT/ddp.log 2>&1
echo "ddp rc $?"; grep -v "it/s\]" $OUT/ddp.log | grep "bench\|Error\|median" | tail -12; grep -A6 "^variant " $OUT/ddp.log
