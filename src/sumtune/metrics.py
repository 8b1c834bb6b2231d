"""ROUGE F1 x 100 with rouge_score's Porter stemmer, and percentile-bootstrap 95% confidence intervals.

`rouge_score` is the reference implementation that `evaluate.load("rouge")` wraps; calling it directly needs no
network. ROUGE-Lsum treats newlines as sentence boundaries, so multi-sentence texts keep their line breaks.
"""

from __future__ import annotations

import numpy as np
from rouge_score import rouge_scorer, tokenizers

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# The scores cards, reports, training curves and MBR use, with their labels (ROUGE-Lsum equals ROUGE-L on one-sentence
# summaries).
SCORES = {key: "ROUGE-" + key.removeprefix("rouge") for key in ROUGE_TYPES[:3]}


def scorer(types=ROUGE_TYPES) -> rouge_scorer.RougeScorer:
    # The tokenizer rouge_score picks by default, given explicitly: left to choose, it logs that it did per call.
    return rouge_scorer.RougeScorer(list(types), use_stemmer=True,
                                    tokenizer=tokenizers.DefaultTokenizer(use_stemmer=True))


def rouge_per_example(predictions: list[str], references: list[str]) -> dict[str, np.ndarray]:
    """F1 x 100 for each (prediction, reference) pair, one array per ROUGE type."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    scorer_ = scorer()
    scores = {key: np.empty(len(predictions)) for key in ROUGE_TYPES}
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        result = scorer_.score(reference, prediction)  # rouge_score's order: target first
        for key in ROUGE_TYPES:
            scores[key][i] = result[key].fmeasure * 100
    return scores


def pairwise_rouge(texts: list[str]) -> np.ndarray:
    """The mean of ROUGE-1, -2 and -L F1 x 100 between every two texts (symmetric: F1 does not depend on which text
    is the reference); the diagonal is each text against itself."""
    scorer_ = scorer(tuple(SCORES))
    n = len(texts)
    matrix = np.full((n, n), 100.0)
    for i in range(n):
        for j in range(i + 1, n):
            result = scorer_.score(texts[i], texts[j])
            matrix[i, j] = matrix[j, i] = 100 * np.mean([score.fmeasure for score in result.values()])
    return matrix


def bootstrap_ci(values: np.ndarray, samples: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    if len(values) == 0 or samples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for start in range(0, samples, 100):  # chunks keep the index matrix small for large test sets
        stop = min(start + 100, samples)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        means[start:stop] = values[idx].mean(axis=1)
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def summarize_scores(scores: dict[str, np.ndarray], samples: int = 1000, seed: int = 0) -> dict:
    """Mean F1 x 100 per ROUGE type (top-level keys) plus `ci95` intervals and the row count."""
    metrics = {key: float(np.mean(values)) for key, values in scores.items()}
    metrics["ci95"] = {key: list(bootstrap_ci(values, samples, seed)) for key, values in scores.items()}
    metrics["num_rows"] = len(next(iter(scores.values())))
    return metrics


def compute_rouge(predictions: list[str], references: list[str], bootstrap_samples: int = 1000,
                  seed: int = 0) -> dict:
    return summarize_scores(rouge_per_example(predictions, references), bootstrap_samples, seed)


def rounded(metrics: dict, digits: int = 2) -> dict:
    """The metrics with every score and interval bound rounded alike, as they are saved and shown."""
    out = dict(metrics)
    for key in ROUGE_TYPES:
        if key in out:
            out[key] = round(float(out[key]), digits)
    if "ci95" in out:
        out["ci95"] = {key: [round(float(v), digits) for v in bounds] for key, bounds in out["ci95"].items()}
    return out
