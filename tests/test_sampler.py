"""Under DDP, length-grouped batches are dealt so that the ranks' batches of a step are equally long."""

import random

import torch
from accelerate.data_loader import BatchSamplerShard
from conftest import ROOT
from torch.utils.data import BatchSampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from sumtune.config import parse_args
from sumtune.training import RankInterleavedSampler, build_trainer


def xsum_like_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)  # a long tail like XSum's prompt + summary lengths, cut at 1,024
    return [min(1024, int(rng.lognormvariate(6.0, 0.55))) for _ in range(n)]


def dealt(make_sampler, batch: int, ranks: int) -> list[list[list[int]]]:
    """What accelerate hands each rank (each with the same seeded sampler): per rank, its list of micro-batches."""
    return [list(BatchSamplerShard(BatchSampler(make_sampler(), batch, drop_last=False), num_processes=ranks,
                                   process_index=rank)) for rank in range(ranks)]


def balance(lengths, per_rank) -> float:
    """Mean over ranks of padded tokens (rows x longest) / the slowest rank's, summed over the steps."""
    steps = list(zip(*per_rank, strict=True))
    costs = [[len(b) * max(lengths[i] for i in b) for b in step] for step in steps]
    return sum(sum(c) for c in costs) / (len(per_rank) * sum(max(c) for c in costs))


def test_interleaving_balances_ranks_and_trains_the_same_rows_per_step():
    lengths, batch, ranks = xsum_like_lengths(6400), 32, 2
    def grouped():
        return LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(42))

    before = dealt(grouped, batch, ranks)
    after = dealt(lambda: RankInterleavedSampler(grouped(), batch, ranks), batch, ranks)

    assert sorted(i for rank in after for b in rank for i in b) == list(range(len(lengths)))  # every row once
    for step_before, step_after in zip(zip(*before, strict=True), zip(*after, strict=True), strict=True):
        assert sorted(sum(step_before, [])) == sorted(sum(step_after, []))  # same rows in each step
        assert all(len(b) == batch for b in step_after)
    plain, balanced = balance(lengths, before), balance(lengths, after)
    assert plain < 0.99  # the imbalance this fixes
    assert balanced > 0.995 and balanced > plain, (plain, balanced)


def test_more_ranks_accumulation_and_an_incomplete_last_step():
    """4 ranks, 2 accumulation steps (the sampler groups by batch x accumulation, as the Trainer builds it), and a
    dataset that ends in an incomplete step: every row once, each micro-step's rows unchanged, ranks balanced."""
    lengths, batch, ranks, accumulation = xsum_like_lengths(1000, seed=3), 8, 4, 2

    def grouped():
        return LengthGroupedSampler(batch * accumulation, lengths=lengths, generator=torch.Generator().manual_seed(0))

    order = list(RankInterleavedSampler(grouped(), batch, ranks))
    assert sorted(order) == list(range(len(lengths)))
    plain = list(grouped())
    step = batch * ranks
    for start in range(0, len(lengths), step):
        assert sorted(order[start:start + step]) == sorted(plain[start:start + step])
    assert order[(len(lengths) // step) * step:] == plain[(len(lengths) // step) * step:]  # the incomplete tail
    complete = (len(lengths) // step) * step

    def per_rank(sequence):
        return [[sequence[k:k + batch] for k in range(r * batch, complete, step)] for r in range(ranks)]

    assert balance(lengths, per_rank(order)) > balance(lengths, per_rank(plain))
    assert balance(lengths, per_rank(order)) > 0.98


def test_one_rank_keeps_the_order_and_the_generator_passes_through():
    lengths = xsum_like_lengths(300)
    inner = LengthGroupedSampler(8, lengths=lengths, generator=torch.Generator().manual_seed(1))
    wrapped = RankInterleavedSampler(inner, 8, 1)
    assert list(wrapped) == list(LengthGroupedSampler(8, lengths=lengths, generator=torch.Generator().manual_seed(1)))
    generator = torch.Generator().manual_seed(7)
    wrapped.generator = generator  # what accelerate does outside its seedable-sampler mode
    assert inner.generator is generator and wrapped.generator is generator
    seeded = RankInterleavedSampler(
        LengthGroupedSampler(8, lengths=lengths, generator=torch.Generator().manual_seed(7)), 8, 3)
    given = RankInterleavedSampler(LengthGroupedSampler(8, lengths=lengths), 8, 3)
    given.generator = torch.Generator().manual_seed(7)
    assert list(seeded) == list(given)
    assert len(seeded) == len(lengths)


def test_trainer_interleaves_length_grouped_batches_only_with_several_processes(tiny_model_dir, data_dir, tmp_path,
                                                                                 in_repo, monkeypatch):
    data_args, _, training_args, model_args = parse_args([
        "--config", str(ROOT / "recipes/tiny/demo.yaml"), "--model_name_or_path", str(tiny_model_dir),
        "--dataset_name", str(data_dir), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
        "--per_device_train_batch_size", "4", "--train_sampling_strategy", "group_by_length",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
    ])
    trainer = build_trainer(data_args, training_args, model_args)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    monkeypatch.setattr(type(trainer.args), "world_size", property(lambda self: 2))
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, RankInterleavedSampler)
    assert (sampler.batch_size, sampler.ranks) == (4, 2)
    trainer.args.train_sampling_strategy = "random"
    assert not isinstance(trainer._get_train_sampler(), RankInterleavedSampler)
