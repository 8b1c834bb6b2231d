"""Generate summaries and score them with ROUGE (F1 x 100, Porter stemmer, bootstrap 95% intervals).

    python evaluate.py --config recipes/phi-2/qlora.yaml --model_name_or_path outputs/phi-2-xsum/merged \
        --load_in_4bit false --dataset_name outputs/phi-2-xsum/data --output_dir outputs/phi-2-xsum/eval/merged
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml evaluate.py ...   # one share per GPU

`sumtune eval` runs the same command; `--help` lists this stage's settings (sumtune.commands.evaluate).
"""

from sumtune.cli import run
from sumtune.commands import evaluate as main

if __name__ == "__main__":
    run(main)
