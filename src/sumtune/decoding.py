"""How summaries are decoded: one settings object, parsed from the recipe and flags (a dataclass of the configuration
schema), that evaluate.py, summarize.py, the in-training ROUGE callback and the benches all generate through.

Greedy decoding runs the project's batched loop (`generation.greedy_batch`); beam search and the `generate()`-only
options go through `model.generate`. Minimum Bayes risk (MBR) decoding (`mbr_candidates` > 1) makes, for each
article, the greedy summary and `mbr_candidates - 1` sampled ones and keeps the candidate with the highest mean ROUGE
against the other candidates: the summary the model's own distribution agrees with most (Kumar & Byrne 2004; with
epsilon sampling as in Freitag et al. 2023). No library offers MBR over a causal LM's summaries with ROUGE as the
utility, so the selection is written here, on rouge_score.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .generation import encode_prompts, iter_summaries, plan_batches
from .metrics import pairwise_rouge


@dataclass(frozen=True)
class Decoding:
    """Every decoding setting, parsed as it is from the recipe and the command line by every stage that generates
    (evaluate.py, summarize.py, train.py's ROUGE callback) and built directly by the benches: the one list of these
    options and their defaults. `text_settings` names those that decide which summary is written; the batching fields
    never change the text of greedy float32 decoding (docs/evaluation.md). A new option is one field here (and its
    range in config.NUMERIC_RANGES when it is a number)."""

    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens of a summary (EOS ends it sooner)."})
    num_beams: int = field(default=1, metadata={"help": "1 = greedy decoding; >1 = beam search."})
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "Decoding through generate(): never repeat an n-gram of this size (0 = off)."}
    )
    length_penalty: float = field(
        default=1.0, metadata={"help": "Beam search: exponent on the length that divides a beam's log-probability "
                                       "(> 1 favours longer summaries, < 1 shorter)."}
    )
    mbr_candidates: int = field(
        default=1,
        metadata={"help": "Minimum Bayes risk decoding: for each article, the greedy summary and mbr_candidates - 1 "
                          "sampled ones; the candidate with the highest mean ROUGE against the others is kept "
                          "(docs/evaluation.md). 1 = off."},
    )
    mbr_epsilon: float = field(
        default=0.02,
        metadata={"help": "MBR candidates are sampled from the tokens with probability above this (epsilon "
                          "sampling)."},
    )
    mbr_seed: int = field(default=42, metadata={"help": "Seed of the MBR candidates' sampling."})
    generation_batch_size: int = field(default=256, metadata={"help": "Most rows in one generation batch."})
    generation_max_batch_tokens: int | None = field(
        default=16384,
        metadata={"help": "Most tokens in one generation batch, counted as rows x (longest prompt + max_new_tokens): "
                          "the KV cache's size. Phi-2's cache is 320 KiB a token in 16-bit, so 16384 is about 5 GiB; a "
                          "larger GPU fits a larger budget, and larger batches generate faster (settings measured per "
                          "GPU: docs/performance.md#generation-speed). None: batches of generation_batch_size rows."},
    )
    cudnn_attention: bool = field(
        default=False,
        metadata={"help": "Generation: let the prompt's attention (prefill) use cuDNN: faster, but not reproducible (a "
                          "repeated run can change the greedy text; docs/evaluation.md#exactness-and-reproducibility); "
                          "off, repeats are identical."},
    )

    def problems(self) -> list[str]:
        """Settings that contradict each other (each number's own range is config.NUMERIC_RANGES')."""
        problems = []
        if self.mbr_candidates == 2:
            problems.append("`mbr_candidates: 2` always keeps the greedy summary (ROUGE F1 is symmetric, so the two "
                            "candidates tie and the greedy one wins): use 1 (off) or 3 and more.")
        if self.mbr and self.num_beams > 1:
            problems.append("MBR decoding (`mbr_candidates` > 1) makes its candidates by greedy decoding and "
                            "sampling, not beam search: set `num_beams: 1`, or `mbr_candidates: 1` for beam search.")
        return problems

    def batching(self) -> dict:
        """The keyword arguments of `generation.iter_summaries` that form batches."""
        return dict(max_new_tokens=self.max_new_tokens, batch_size=self.generation_batch_size,
                    max_batch_tokens=self.generation_max_batch_tokens, cudnn_attention=self.cudnn_attention)

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
            settings |= {"mbr_candidates": self.mbr_candidates, "mbr_epsilon": self.mbr_epsilon, "seed": self.mbr_seed}
        return settings

    def plan(self, lengths: list[int]) -> list[list[int]]:
        """The batches (lists of indices into `lengths`, the prompts' token counts) `iter_summaries` generates.
        Each beam or MBR candidate holds its own KV cache, so the token budget is shared among them."""
        return plan_batches(lengths, max_new_tokens=self.max_new_tokens, batch_size=self.generation_batch_size,
                            max_batch_tokens=self.generation_max_batch_tokens,
                            num_beams=max(self.num_beams, self.mbr_candidates))

    def iter_summaries(self, model, tokenizer, prompts: list[list[dict]], batches: list[list[int]] | None = None,
                       encoded: list[list[int]] | None = None) -> Iterator[tuple[int, str]]:
        """Yield (index into prompts, summary) batch by batch, in generation order. `batches` (lists of indices into
        prompts, as `plan` makes them) and `encoded` (`generation.encode_prompts`) when the caller has them."""
        if encoded is None:
            encoded = encode_prompts(tokenizer, prompts)
        if batches is None:
            batches = self.plan([len(ids) for ids in encoded])
        common = self.batching()
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
        torch.manual_seed(self.mbr_seed * 1_000_003 + batch[0])
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
