"""Export a run's merged model as GGUF files for llama.cpp, Ollama and LM Studio (f16, q8_0, q4_k_m).

    python export_gguf.py --run_dir outputs/demo                      # outputs/demo/merged -> outputs/demo/gguf

`sumtune gguf` runs the same command; `--help` lists its settings (sumtune.commands.gguf).
"""

from sumtune.cli import run
from sumtune.commands import gguf as main

if __name__ == "__main__":
    run(main)
