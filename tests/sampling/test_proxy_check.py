"""Proxy sanity checks: the AUC verdict and the flip rule."""

from __future__ import annotations

import numpy as np
import pytest

from sampling.proxy_check import advise_flip, check_proxy_ranking, weighted_auc


def _sample(rng: np.random.Generator, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    score = rng.random(n)
    return score, (rng.random(n) < score).astype(np.int64)


def test_weighted_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    s = np.round(rng.random(60), 1)  # ties count half
    y = (rng.random(60) < 0.4).astype(np.int64)
    w = rng.uniform(0.5, 2.0, 60)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pair = (s[pos, None] > s[None, neg]) + 0.5 * (s[pos, None] == s[None, neg])
    expected = (w[pos, None] * w[None, neg] * pair).sum() / (w[pos].sum() * w[neg].sum())
    assert weighted_auc(s, y, w) == pytest.approx(expected)


def test_verdicts_for_good_reversed_and_random_proxies() -> None:
    rng = np.random.default_rng(1)
    s, y = _sample(rng)
    assert check_proxy_ranking(s, y).verdict == "informative"
    flipped = check_proxy_ranking(1.0 - s, y)
    assert flipped.verdict == "reversed" and flipped.ci_high < 0.5
    noise = check_proxy_ranking(rng.random(s.size), y)
    assert noise.verdict == "uninformative" and noise.ci_low <= 0.5 <= noise.ci_high
    assert check_proxy_ranking(np.full(s.size, 0.3), y).verdict == "uninformative"


def test_too_few_labels_of_one_class_is_uninformative_not_an_error() -> None:
    out = check_proxy_ranking(np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0]))
    assert out.verdict == "uninformative" and "too few" in out.reason


def test_random_proxy_is_rarely_called_informative_or_reversed() -> None:
    """The interval is a diagnostic, not a certificate, but it should be calibrated: over 200
    random proxies, a 95% interval excludes 0.5 in at most ~10% of them."""
    rng = np.random.default_rng(2)
    wrong = 0
    for _ in range(200):
        _, y = _sample(rng, 200)
        wrong += check_proxy_ranking(rng.random(200), y).verdict != "uninformative"
    assert wrong / 200 <= 0.10


def test_flip_keeps_the_guarantee_only_without_statistical_reuse() -> None:
    rng = np.random.default_rng(3)
    s, y = _sample(rng)
    reversed_check = check_proxy_ranking(1.0 - s, y)
    assert advise_flip(reversed_check, "none").flip
    assert advise_flip(reversed_check, "exact").keeps_guarantee
    reuse = advise_flip(reversed_check, "statistical")
    assert not reuse.flip and not reuse.keeps_guarantee
    assert not advise_flip(check_proxy_ranking(s, y), "none").flip
    with pytest.raises(ValueError, match="reuse"):
        advise_flip(reversed_check, "maybe")  # type: ignore[arg-type]
