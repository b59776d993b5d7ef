"""Echo-cancellation measures shared by the tests and `benchmarks/echo_candidates.py`.

`db`: power in dB (ERLE is a difference of two); `aligned_stoi`: short-time objective
intelligibility of a recording against the clean speech it holds, after finding the small delay
a canceller may add (STOI needs the two aligned). `pystoi` is a test-only dependency (the dev
extra), imported when `aligned_stoi` runs.
"""

from __future__ import annotations

import numpy as np

from ..conversation import SAMPLE_RATE


def db(x: np.ndarray) -> float:
    """Mean power of `x` in dB (with a floor, so silence is finite)."""
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def aligned_stoi(clean: np.ndarray, heard: np.ndarray, start: int, max_lag: int = 1200,
                 rate: int = SAMPLE_RATE) -> float:
    """STOI of `heard` (which holds `clean` from sample `start`, possibly up to `max_lag` late)."""
    from pystoi import stoi

    n = len(clean)
    seg = np.concatenate([heard[start:start + n + max_lag], np.zeros(n + max_lag, np.float32)])
    lag = max(range(0, max_lag, 2), key=lambda k: float(np.dot(seg[k:k + n], clean)))
    return float(stoi(clean, seg[lag:lag + n], rate))
