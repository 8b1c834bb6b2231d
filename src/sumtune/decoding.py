"""How summaries are decoded: one settings object, built once from the recipe and flags (`Decoding.from_args`), that
evaluate.py, summarize.py, the in-training ROUGE callback and the benches all generate through.

Greedy decoding runs the project's batched loop (`generation.greedy_batch`); beam search and the `generate()`-only
options go through `model.generate`. Minimum Bayes risk (MBR) decoding (`mbr_candidates` > 1) makes, for each
article, the greedy summary and `mbr_candidates - 1` sampled ones and keeps the candidate with the highest mean ROUGE
against the other candidates: the summary the model's own distribution agrees with most (Kumar & Byrne 2004; with
epsilon sampling as in Freitag et al. 2023). No library offers MBR over a causal LM's summaries with ROUGE as the
utility, so the selection is written here, on rouge_score.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .generation import encode_prompts, iter_summaries, plan_batches
from .metrics import pairwise_rouge


@dataclass(frozen=True)
class Decoding:
    """Every setting that decides which summary is written (`text_settings`) and how batches are formed (the rest,
    which never changes the text of greedy float32 decoding; see docs/evaluation.md)."""

    max_new_tokens: int = 64
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    mbr_candidates: int = 1
    mbr_epsilon: float = 0.02
    seed: int = 42
    batch_size: int = 256
    max_batch_tokens: int | None = 16384
    cudnn_attention: bool = False

    @classmethod
    def from_args(cls, eval_args, seed: int = 42) -> Decoding:
        """From EvalArguments (every stage parses the same fields, so a recipe's decoding is the same everywhere)."""
        return cls(max_new_tokens=eval_args.max_new_tokens, num_beams=eval_args.num_beams,
                   no_repeat_ngram_size=eval_args.no_repeat_ngram_size, length_penalty=eval_args.length_penalty,
                   mbr_candidates=eval_args.mbr_candidates, mbr_epsilon=eval_args.mbr_epsilon, seed=seed,
                   batch_size=eval_args.generation_batch_size,
                   max_batch_tokens=eval_args.generation_max_batch_tokens,
                   cudnn_attention=eval_args.cudnn_attention)

    @property
    def mbr(self) -> bool:
        return self.mbr_candidates > 1

    def generate_options(self) -> dict:
        """generate() options beyond greedy / beam search; any of them sends generation through `model.generate`."""
        options = {}
        if self.no_repeat_ngram_size:
            options["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.length_penalty != 1.0:
            options["length_penalty"] = self.length_penalty
        return options

    def text_settings(self) -> dict:
        """What identifies the text this decoding writes (run keys, manifests, metrics): the defaults of options
        that are off are left out, so outputs made before an option existed keep their key."""
        settings = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, **self.generate_options()}
        if self.mbr:
            settings |= {"mbr_candidates": self.mbr_candidates, "mbr_epsilon": self.mbr_epsilon, "seed": self.seed}
        return settings

    def plan(self, lengths: list[int]) -> list[list[int]]:
        """The batches (lists of indices into `lengths`, the prompts' token counts) `iter_summaries` generates.
        Each beam or MBR candidate holds its own KV cache, so the token budget is shared among them."""
        return plan_batches(lengths, self.max_new_tokens, max(self.num_beams, self.mbr_candidates),
                            self.batch_size, self.max_batch_tokens)

    def iter_summaries(self, model, tokenizer, prompts: list[list[dict]], batches: list[list[int]] | None = None,
                       encoded: list[list[int]] | None = None) -> Iterator[tuple[int, str]]:
        """Yield (index into prompts, summary) batch by batch, in generation order. `batches` (lists of indices into
        prompts, as `plan` makes them) and `encoded` (`generation.encode_prompts`) when the caller has them."""
        if encoded is None:
            encoded = encode_prompts(tokenizer, prompts)
        if batches is None:
            batches = self.plan([len(ids) for ids in encoded])
        common = dict(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                      max_batch_tokens=self.max_batch_tokens, cudnn_attention=self.cudnn_attention)
        for batch in batches:
            texts = dict(iter_summaries(model, tokenizer, prompts, num_beams=self.num_beams, batches=[batch],
                                        encoded=encoded, **common, **self.generate_options()))
            if self.mbr:
                texts = self._mbr_batch(model, tokenizer, prompts, encoded, batch, texts, common)
            for i in batch:
                yield i, texts[i]

    def _mbr_batch(self, model, tokenizer, prompts, encoded, batch, greedy: dict[int, str], common) -> dict[int, str]:
        """The MBR choice for each row of `batch`: its greedy summary and mbr_candidates - 1 samples, each row's
        copies side by side in one batch. Seeded by the batch's first row, so a resumed or data-parallel run draws
        the same samples for the same batch."""
        copies = self.mbr_candidates - 1
        rows = [i for i in batch for _ in range(copies)]
        torch.manual_seed(self.seed * 1_000_003 + batch[0])
        samples: dict[int, list[str]] = {i: [] for i in batch}
        for k, text in iter_summaries(model, tokenizer, [prompts[i] for i in rows],
                                      batches=[list(range(len(rows)))], encoded=[encoded[i] for i in rows],
                                      do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                      epsilon_cutoff=self.mbr_epsilon, **common, **self.generate_options()):
            samples[rows[k]].append(text)
        return {i: mbr_select([greedy[i], *samples[i]]) for i in batch}

    def generate(self, model, tokenizer, prompts: list[list[dict]]) -> list[str]:
        """One summary per conversational prompt, in input order."""
        outputs = [""] * len(prompts)
        for i, text in self.iter_summaries(model, tokenizer, prompts):
            outputs[i] = text
        return outputs


def mbr_select(candidates: list[str]) -> str:
    """The candidate with the highest mean ROUGE (the mean of ROUGE-1, -2 and -L F1) against the other candidates;
    the first such one on a tie, so the greedy summary (first) wins whenever sampling adds nothing new."""
    if len(candidates) == 1:
        return candidates[0]
    utility = pairwise_rouge(candidates)
    np.fill_diagonal(utility, 0.0)
    return candidates[int(np.argmax(utility.sum(axis=1)))]
