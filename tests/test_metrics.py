"""ROUGE on literal strings, and the bootstrap interval."""

import numpy as np
import pytest
from rouge_score import rouge_scorer

from sumtune.metrics import ROUGE_TYPES, bootstrap_ci, compute_rouge, rounded


def test_identical_is_100_and_disjoint_is_0():
    metrics = compute_rouge(["the cat sat on the mat"], ["the cat sat on the mat"], bootstrap_samples=10)
    assert all(metrics[key] == pytest.approx(100.0) for key in ROUGE_TYPES)
    metrics = compute_rouge(["alpha beta gamma"], ["delta epsilon zeta"], bootstrap_samples=10)
    assert all(metrics[key] == 0.0 for key in ROUGE_TYPES)


def test_stemming_matches_inflections():
    metrics = compute_rouge(["the councils voted"], ["the council votes"], bootstrap_samples=10)
    assert metrics["rouge1"] == pytest.approx(100.0)


def test_means_match_rouge_score():
    predictions = ["a storm hit the town", "the team won the cup final", "prices rose again"]
    references = ["a storm damaged homes in the town", "the team lost the final", "inflation fell"]
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    pairs = list(zip(predictions, references, strict=True))
    expected = {k: np.mean([scorer.score(r, p)[k].fmeasure * 100 for p, r in pairs]) for k in ROUGE_TYPES}
    metrics = compute_rouge(predictions, references, bootstrap_samples=200)
    for key in ROUGE_TYPES:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9)
        low, high = metrics["ci95"][key]
        assert low <= metrics[key] <= high
    assert metrics["num_rows"] == 3


def test_bootstrap_interval_shrinks_with_more_rows():
    rng = np.random.default_rng(0)
    small = bootstrap_ci(rng.normal(50, 10, 20), samples=500)
    large = bootstrap_ci(rng.normal(50, 10, 2000), samples=500)
    assert (large[1] - large[0]) < (small[1] - small[0])
    assert bootstrap_ci(np.full(10, 7.0), samples=50) == (7.0, 7.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        compute_rouge(["a", "b"], ["a"])


def test_rounded_rounds_scores_and_intervals_alike():
    metrics = compute_rouge(["a storm hit the town"], ["a storm damaged the town"], bootstrap_samples=10)
    metrics["ci95"]["rouge1"] = [43.21987, 55.44444]
    out = rounded(metrics)
    assert out["rouge1"] == round(metrics["rouge1"], 2) and out["ci95"]["rouge1"] == [43.22, 55.44]
    assert out["num_rows"] == 1 and metrics["ci95"]["rouge1"] == [43.21987, 55.44444]  # the input is left as it was
