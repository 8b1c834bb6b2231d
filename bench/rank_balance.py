"""How evenly DDP's ranks share the work of length-grouped batches (CPU only, no model).

transformers' `LengthGroupedSampler` sorts megabatches of `min(rows // (4 x batch), 50)` batches by length, and
accelerate deals consecutive batches to the ranks, so at each optimizer step rank 0 gets a batch and rank 1 the next
one of the same sorted megabatch. A step lasts as long as its slower rank. With the cost of a batch taken as its
padded tokens (rows x longest row), this prints, for training sets of several sizes built by drawing from the real
lengths: balance = mean rank cost / slowest rank cost per step (1.0 = perfectly even; DDP's speed-up is at most
`ranks x balance` over one GPU doing the same batches). The second figure is for the order the project's trainer
uses under DDP (`sumtune.training.RankInterleavedSampler`: each step's rows dealt row by row to the ranks).

    python bench/rank_balance.py --data /tmp/sumtune-bench/data   # a folder prepared by bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import random

import torch
from datasets import load_from_disk
from transformers.trainer_pt_utils import LengthGroupedSampler

from sumtune.training import RankInterleavedSampler


def balance(lengths: list[int], batch: int, ranks: int, seed: int, interleave: bool = False) -> float:
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedSampler(batch, lengths=lengths, generator=generator)
    order = list(RankInterleavedSampler(sampler, batch, ranks) if interleave else sampler)
    costs = [batch * max(lengths[i] for i in order[k:k + batch]) for k in range(0, len(order) - batch + 1, batch)]
    steps = [costs[k:k + ranks] for k in range(ranks, len(costs) - ranks + 1, ranks)]  # the first step is warm-up
    return sum(sum(s) for s in steps) / (ranks * sum(max(s) for s in steps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared dataset folder with a num_tokens column")
    p.add_argument("--batch", type=int, default=32, help="per-GPU micro-batch")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--sizes", default="0,2000,6400,20000", help="training-set sizes to draw (0 = the set as it is)")
    args = p.parse_args()
    lengths = load_from_disk(args.data)["train"]["num_tokens"]
    rng = random.Random(0)
    print(f"{len(lengths)} rows in {args.data}; batch {args.batch}, {args.ranks} ranks")
    for size in (int(x) for x in args.sizes.split(",")):
        drawn = lengths if size == 0 else [rng.choice(lengths) for _ in range(size)]
        values = [balance(drawn, args.batch, args.ranks, seed) for seed in range(3)]
        dealt = [balance(drawn, args.batch, args.ranks, seed, interleave=True) for seed in range(3)]
        print(f"{len(drawn):>7} rows: balance {min(values):.3f}-{max(values):.3f}, interleaved "
              f"{min(dealt):.3f}-{max(dealt):.3f} (3 sampler seeds)")


if __name__ == "__main__":
    main()
