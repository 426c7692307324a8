"""The Markdown of the tables: figures, rows with the best figure in bold, wall times, the settings' lines."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.bench.jobs import Step
from benchmarks.bench.methods import Evaluation
from benchmarks.bench.settings import DATA_NOTE, FAMILIES, GRIDS, Settings
from scripts.files import atomic_write_bytes

METRICS: tuple[tuple[str, str], ...] = (("auprc", "AUPRC"), ("ceil_dice", "⌈Dice⌉"), ("dice_yen", "Dice_Yen"))


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for the tables; ``n/a`` for a missing or non-finite one."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def mf_name(size: int) -> str:
    return "off" if size <= 1 else str(size)


def metric_header() -> list[str]:
    """Column titles of the figures: each metric for each lesion family."""
    return [f"{family} {title}" for family in FAMILIES for _, title in METRICS]


def metric_values(evaluations: Mapping[str, Evaluation], median_filter: int) -> list[float | None]:
    """The figures of one row: for each family (``evaluations[family]``), AUPRC, ceil Dice and Dice_Yen."""
    values: list[float | None] = []
    for family in FAMILIES:
        ev = evaluations.get(family)
        row = ev.metrics.get(median_filter, {}) if ev else {}
        values += [row.get(key) for key, _ in METRICS]
    return values


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figure_rows(rows: Sequence[tuple[list[str], list[float | None], bool]], digits: int = 3) -> list[list[str]]:
    """Format rows of (label cells, figures, ranked): the best figure of each column among the ranked rows in bold."""
    width = max((len(v) for _, v, _ in rows), default=0)
    best = []
    for j in range(width):
        ranked = [v[j] for _, v, r in rows if r and v[j] is not None and math.isfinite(v[j])]
        best.append(round(max(ranked), digits) if ranked else None)
    out = []
    for labels, values, ranked in rows:
        cells = []
        for j, v in enumerate(values):
            text = fmt(v, digits)
            if ranked and best[j] is not None and text != "n/a" and round(v, digits) == best[j]:
                text = f"**{text}**"
            cells.append(text)
        out.append([*labels, *cells])
    return out


def printed_by(module: str) -> str:
    """``Printed by `python -m <module> <this run's arguments>` (<today>)``: a report's first words, so that the
    command that printed it can be run again."""
    return f"Printed by `python -m {module} {shlex.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')})"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


RESUMED_NOTE = "resumed after an interruption: its last attempt only"


def step_time(step: Step | float) -> str:
    """A step's wall time (a :class:`~.jobs.Step`, or seconds), marked where the step was resumed and with its
    record's note (e.g. that it includes a pause)."""
    if isinstance(step, (int, float)):
        return minutes(step)
    notes = [RESUMED_NOTE] * step.resumed + [step.note] * bool(step.note)
    return minutes(step.seconds) + (f" ({'; '.join(notes)})" if notes else "")


def wall_time_lines(seconds: Mapping[str, Step | float], invocation: float, heading: str = "Wall times") -> list[str]:
    """The report's wall-time section: each step's time (:func:`step_time`; steps found done in the work folder at
    the time of the run that finished them, a step interrupted and resumed, e.g. a training from its checkpoint,
    marked: its time is that of the last attempt only), then the ``invocation`` seconds of this run of the script."""
    return [
        f"## {heading}",
        "",
        *[f"- {k}: {step_time(v)}" for k, v in seconds.items()],
        f"- this invocation: {minutes(invocation)} (steps it found done took no time; they are listed above at the "
        "time of the run that finished them)",
    ]


def wall(steps: Sequence[Step]) -> str:
    """The summed wall time of ``steps``, noting those found done in the work folder or resumed."""
    if not steps:
        return "-"
    text = minutes(sum(x.seconds for x in steps))
    notes = []
    if any(x.reused for x in steps):
        notes.append("recorded by an earlier run" if all(x.reused for x in steps) else "partly by an earlier run")
    if any(x.resumed for x in steps):
        notes.append(RESUMED_NOTE)
    notes += [f"{x.name}: {x.note}" for x in steps if x.note]
    return text + (f" ({'; '.join(notes)})" if notes else "")


def failures_section(failures: Mapping[str, str]) -> list[str]:
    """The report's "Failures" section: each failed step with the first line of its error; none without failures."""
    if not failures:
        return []
    return ["## Failures", "", *[f"- {step}: {error.splitlines()[0]}" for step, error in failures.items()], ""]


def write_report(text: str, path: str | os.PathLike) -> Path:
    """Write the report atomically (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(text.encode(), path)


def settings_lines(s: Settings) -> list[str]:
    """The data and budget settings, as Markdown list items."""
    shape, spacing = GRIDS[s.grid]
    preset = "tiny (smoke)" if s.smoke else f"`{s.preset}`"
    dae_preset = "tiny (smoke)" if s.smoke else f"`{s.dae_preset}`"
    return [
        f"- Data ({DATA_NOTE}, `scripts.synthetic.make_dataset`, seed {s.seed}): grid `{s.grid}` {shape} at "
        f"{spacing[0]} mm, axial slices resized to {s.image_size}x{s.image_size} (paper: 128); {s.n_train} healthy "
        f"training + {s.n_val} healthy validation studies; per lesion family {s.n_test} test studies "
        f"({', '.join(f'{k}: {v}' for k, v in FAMILIES.items())}).",
        f"- Training budget, the same for every trained method: {s.iterations} iterations x batch {s.batch_size} "
        f"({s.iterations * s.batch_size} slices drawn) with the bundle's recipe (`run training`), validation every "
        f"{s.epoch_iterations} iterations on {s.val_batches} batches; bf16 autocast "
        f"{'on' if s.autocast else 'off'} (the DAE runs in fp32 whatever this setting); DDPM network preset "
        f"{preset}, DAE preset {dae_preset}.",
        f"- Machine: {os.cpu_count()} CPU cores; {s.jobs} bundle command(s) side by side with {s.threads} "
        f"thread(s) each (OMP_NUM_THREADS), so each method's wall time is that of {s.threads} core(s); wall times "
        "depend on what else ran on the machine meanwhile.",
        f"- Settings as JSON: `{json.dumps(asdict(s))}`",
    ]
