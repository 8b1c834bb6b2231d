# Sourced at the start of every GPU run (bench/README.md, "Running on a GPU"): the carried wheels (.device_assets/whl:
# the locked trl, datasets, bitsandbytes, rouge-score, gguf, transformers and its tokenizers) into /tmp/site, ahead of
# the image's own packages, and the environment the benches expect. Prints the versions that will run.
set -euo pipefail
python3 -m pip install -q --upgrade --no-index --no-deps --target /tmp/site .device_assets/whl/*.whl 2>&1 | grep -v WARNING || true
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 -c "import torch, transformers, trl, peft, bitsandbytes, tokenizers; print('device env:', torch.cuda.get_device_name(0), 'torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)"
