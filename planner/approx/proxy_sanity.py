"""Proxy sanity: measure the proxy against labels the query already has, and say so when it ranks
no better than chance or backwards.

Two moments. Before sampling, labels cached by earlier queries are independent of this query's
draws, so a proxy they show to be reversed is flipped (1 - score) with the guarantee intact
(``sampling.proxy_check.advise_flip``). After sampling, the labels the operator drew describe the
proxy the answer used: a NOTICE tells the user what to change next time (nothing is flipped then:
the draws that judged the proxy are the ones its bound used).
"""

from __future__ import annotations

import asyncio

import numpy as np

# fewer labels of a class than this say nothing useful about a ranking
MIN_PER_CLASS = 10


async def flip_on_cached(scores: np.ndarray, known: dict[int, bool]) -> tuple[np.ndarray, str | None]:
    """(scores to use, a NOTICE or None) from the cached labels of candidate positions."""
    from sampling import advise_flip, check_proxy_ranking

    if not _enough(known):
        return scores, None
    positions = np.fromiter(known, dtype=np.int64, count=len(known))
    labels = np.array([known[int(i)] for i in positions], dtype=np.int64)
    check = await asyncio.to_thread(check_proxy_ranking, scores[positions], labels)
    advice = advise_flip(check, "none")
    if not advice.flip:
        return scores, None
    words = (
        f"the proxy ranks backwards on {len(known)} cached labels ({check.reason}); "
        "it is used flipped (1 - score), which keeps the guarantee (those labels are independent "
        "of this query's draws)"
    )
    return 1.0 - scores, words


async def verdict_words(proxy: str, scores: np.ndarray, labelled: dict[int, bool]) -> str | None:
    """A NOTICE when the labels drawn show the proxy reversed or uninformative, else None."""
    from sampling import check_proxy_ranking

    if not _enough(labelled):
        return None
    positions = np.fromiter(labelled, dtype=np.int64, count=len(labelled))
    labels = np.array([labelled[int(i)] for i in positions], dtype=np.int64)
    check = await asyncio.to_thread(check_proxy_ranking, scores[positions], labels)
    if check.verdict == "reversed":
        return (
            f"proxy check: USING PROXY {proxy} ranks backwards on the {len(labelled)} rows labelled "
            f"({check.reason}); the answer holds its guarantee but cost more labels than needed: "
            f"try USING PROXY 1 - ({proxy})"
        )
    if check.verdict == "uninformative":
        return (
            f"proxy check: USING PROXY {proxy} ranks no better than chance on the {len(labelled)} rows "
            f"labelled ({check.reason}); the answer holds its guarantee, but a better proxy would "
            "need fewer labels"
        )
    return None


def _enough(labels: dict[int, bool]) -> bool:
    positives = sum(1 for v in labels.values() if v)
    return min(positives, len(labels) - positives) >= MIN_PER_CLASS
