"""Export a run's merged model as GGUF files for llama.cpp, Ollama and LM Studio (f16, q8_0, q4_k_m), with the chat
template, the stop token and an Ollama Modelfile; converted and quantized by llama.cpp's own tools.

    python export_gguf.py --run_dir outputs/demo                      # outputs/demo/merged -> outputs/demo/gguf
    python export_gguf.py --merged_dir path/to/model --output_dir path/to/gguf --types f16 q8_0
Needs the optional toolchain: `make install-gguf` (docs/gguf.md).
"""

import argparse

from sumtune.cli import run
from sumtune.config import ConfigError


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[3:]))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_dir", help="train.py's --output_dir: exports RUN_DIR/merged into RUN_DIR/gguf")
    source.add_argument("--merged_dir", help="a merged model folder (then --output_dir is needed)")
    parser.add_argument("--output_dir", help="where the GGUF files go (default: RUN_DIR/gguf)")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_k_m"], metavar="TYPE",
                        help="GGUF types to write, of f16, q8_0, q4_k_m (default: all three)")
    parser.add_argument("--overwrite_output_dir", default="false", choices=["true", "false"],
                        help="replace an export made with other settings (default: false)")

    def error(message):
        raise ConfigError(f"{message}. `python export_gguf.py --help` shows the usage.")

    parser.error = error
    args = parser.parse_args(argv)
    if args.merged_dir and not args.output_dir:
        error("--merged_dir needs --output_dir")
    return args


def main():
    args = parse()
    from pathlib import Path

    from sumtune.gguf_export import GGUF_DIR, export_gguf

    merged = Path(args.merged_dir) if args.merged_dir else Path(args.run_dir) / "merged"
    output = Path(args.output_dir) if args.output_dir else Path(args.run_dir) / GGUF_DIR
    path = export_gguf(merged, output, args.types, args.overwrite_output_dir == "true")
    print(f"GGUF files in {path}")


if __name__ == "__main__":
    run(main)
