"""Mean and standard deviation over seeds, for the benchmarks' ``--seeds`` (noise seeds) and ``--train_seeds``
(trainings) options: every figure a decision rests on is given as mean ± SD, with the number of runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``values``; the SD is NaN for a single value."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def fmt_spread(values: Sequence[float], digits: int = 3) -> str:
    """``"0.412 ± 0.013"`` over the runs in ``values``; one run prints its value alone."""
    mean, sd = mean_sd(values)
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" if not np.isfinite(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"
