"""Data for the sampling tests: the real SUPG ImageNet file (when present) and generated sets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sampling import RankedProxy, rank_proxy

IMAGENET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "supg" / "imagenet.csv"
needs_imagenet = pytest.mark.skipif(
    not IMAGENET.exists(), reason=f"real SUPG ImageNet data not found at {IMAGENET} (outside the repo)"
)

TRIALS = 100
DELTA = 0.05


def success_floor(confidence: float, trials: int) -> float:
    """Lowest success rate we accept: 1 - δ minus two binomial standard errors at exactly 1 - δ.

    A method that truly succeeds with probability 1 - δ falls below this about 2.5% of the time
    for a given seed set; the seeds are fixed, so the tests are deterministic.
    """
    return confidence - 2.0 * math.sqrt(confidence * (1.0 - confidence) / trials)


@dataclass(frozen=True)
class Labelled:
    name: str
    proxy: np.ndarray
    labels: np.ndarray
    ranked: RankedProxy

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def oracle(self, idx: np.ndarray) -> np.ndarray:
        return self.labels[idx]

    def recall(self, indices: np.ndarray) -> float:
        return float(self.labels[indices].sum() / self.positives)

    def precision(self, indices: np.ndarray) -> float:
        # an empty answer makes no false claim: count it as precision 1
        return float(self.labels[indices].mean()) if indices.size else 1.0


def _labelled(name: str, proxy: np.ndarray, labels: np.ndarray) -> Labelled:
    return Labelled(name, proxy, labels.astype(np.int64), rank_proxy(proxy))


@pytest.fixture(scope="session")
def imagenet() -> Labelled:
    if not IMAGENET.exists():
        pytest.skip(f"real SUPG ImageNet data not found at {IMAGENET}")
    raw = np.genfromtxt(IMAGENET, delimiter=",", names=True, dtype=None, encoding=None)
    return _labelled("imagenet", raw["proxy_score"].astype(np.float64), raw["label"].astype(bool))


@pytest.fixture(scope="session")
def beta_synthetic() -> Labelled:
    """SUPG's generator: proxy ~ Beta(0.01, 2), label ~ Bernoulli(proxy), N = 1,000,000."""
    rng = np.random.default_rng(20240601)
    proxy = rng.beta(0.01, 2.0, 1_000_000)
    return _labelled("beta", proxy, rng.random(proxy.size) < proxy)


@pytest.fixture(scope="session")
def wide_synthetic() -> Labelled:
    """Many high-precision rows (proxy ~ Beta(2, 1), label ~ Bernoulli(proxy^0.3)), so a
    precision target needs a sampled threshold rather than a census of the top rows."""
    rng = np.random.default_rng(7)
    proxy = rng.beta(2.0, 1.0, 200_000)
    return _labelled("wide", proxy, rng.random(proxy.size) < proxy**0.3)
