"""Build the demo's base model offline: a byte-level BPE tokenizer trained on the demo data and a random-weight
tiny Phi model (`PhiForCausalLM` from a small `PhiConfig`).

    python scripts/build_tiny_model.py --data data/demo/train.jsonl --output_dir outputs/demo-tiny/base-model
"""

import argparse
import json
from pathlib import Path

from sumtune.tiny import build_tiny_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo/train.jsonl")
    parser.add_argument("--output_dir", default="outputs/demo-tiny/base-model")
    parser.add_argument("--vocab_size", type=int, default=2000)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row["document"] for row in rows] + [row["summary"] for row in rows]
    texts.append(Path("prompts/instruction.txt").read_text(encoding="utf-8") + "Article:\nSummary:\n")
    path = build_tiny_model(args.output_dir, texts, seed=args.seed, vocab_size=args.vocab_size,
                            hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers)
    print(f"Tiny base model saved to {path}")


if __name__ == "__main__":
    main()
