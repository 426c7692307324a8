"""The ``evaluate`` workflow's reporting: labelled studies in, metrics tables and precision-recall curves out.

The subjects are those that :class:`scripts.collect.MapCollector` keeps while the evaluator runs: each study's reduced
map, label and brain mask on the scoring grid (and, with its ``maps_dir``, ``maps/<name>.npz``).
:class:`EvaluationReport` computes :mod:`scripts.metrics` for each median filter setting and writes
``metrics_per_subject.csv``, ``metrics.md``, ``metrics.json`` and ``pr_curves.png``, each atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts import as_optional_float
from scripts.collect import MapCollector
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.metrics import AUTHORS_CEIL_GRID, MEDIAN_FILTER_SIZES, CalibratedRule, Metrics, evaluate_all
from scripts.postprocess import map_label

logger = logging.getLogger(__name__)

CSV_FILE = "metrics_per_subject.csv"
MARKDOWN_FILE = "metrics.md"
JSON_FILE = "metrics.json"
CURVES_FILE = "pr_curves.png"


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _finite_or_none(value: object) -> object:
    """``value``, or None (JSON null) when it is a NaN or infinite number."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def mf_label(size: int) -> str:
    """``"off"`` or ``"3"``... for a median filter size."""
    return "off" if size <= 1 else str(size)


def markdown_table(results: Sequence[Metrics]) -> str:
    """The summary table: one row per voxel set and median filter setting; AUPRC, ceil Dice (threshold), pooled
    ceil Dice, Dice_Yen, the median share of the brain the Yen segmentation marks, rejected segmentations, AUROC."""
    lines = [
        "| voxel set | median filter | AUPRC | ceil Dice (threshold) | pooled ceil Dice | Dice_Yen (mean ± sd) | "
        "brain marked by Yen (median) | rejected | AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in results:
        lines.append(
            f"| {m.voxel_set} | {mf_label(m.median_filter)} | {_fmt(m.auprc)} | {_fmt(m.ceil_dice)} "
            f"({_fmt(m.ceil_threshold, 3)}) | {_fmt(m.ceil_dice_pooled)} | {_fmt(m.dice_yen)} ± {_fmt(m.dice_yen_std)} "
            f"| {_fmt(100 * m.segmented_fraction_median, 1)}% | {m.rejected} of {m.n_subjects} | {_fmt(m.auroc)} |"
        )
    return "\n".join(lines) + "\n"


def n_studies(n: int) -> str:
    """The count as the reports print it: "1 study", "2 studies"."""
    return f"{n} study" if n == 1 else f"{n} studies"


def markdown_report(
    results: Sequence[Metrics], settings: Mapping[str, object] | None = None, note: str = "", method: str = "ANDi"
) -> str:
    """``metrics.md``: the summary table, what it was computed on, and the settings of the run."""
    n = results[0].n_subjects if results else 0
    raw = ", ".join(f"{m.voxel_set} MF {mf_label(m.median_filter)}: {m.ceil_threshold_raw:.6g}" for m in results)
    prevalence = ", ".join(sorted({f"{m.voxel_set} {_fmt(m.prevalence, 5)}" for m in results}))
    text = [
        f"# {method} evaluation",
        "",
        *([note, ""] if note else []),
        markdown_table(results),
        f"- {n_studies(n)}, on the scoring grid. Voxel set `volume`: every voxel of the grid, background included (the",
        "  authors'); `brain`: the brain voxels, the map 0 outside the brain before the median filter.",
        "- AUPRC, AUROC: every voxel of the voxel sets of the test set pooled, the maps min-max normalised to [0, 1]",
        "  over those voxels (paper Sec. 5.4).",
        "- ceil Dice (the paper's): the mean over subjects of per-subject Dice at one threshold on that normalised",
        f"  scale, the best threshold of the grid searched (on the maps' own scale: {raw}). Pooled ceil Dice: the",
        "  best Dice of all voxels pooled at one threshold (big lesions weigh more).",
        "- Dice_Yen: per-subject Yen threshold on the voxel set plus one 3D dilation, after the guard (a segmentation",
        "  marking more of the brain than the limit is rejected: empty); mean ± sd over the subjects with a lesion.",
        "  'brain marked by Yen' is the median share of the brain the raw Yen segmentation marks.",
        f"- Anomalous voxels: label > 0.5 inside the brain; prevalence {prevalence or 'n/a'}.",
        f"- Per-subject figures: `{CSV_FILE}`; all figures: `{JSON_FILE}`; precision-recall curves: `{CURVES_FILE}`.",
        *calibrated_lines(results),
    ]
    if settings:
        text += ["", "Settings:", "", *[f"- {k}: `{v}`" for k, v in settings.items()]]
    return "\n".join(text) + "\n"


def calibrated_lines(results: Sequence[Metrics]) -> list[str]:
    """The calibrated rule's figures (inference's ``segmentation: calibrated``), where a calibration fitted: a Markdown
    list item per voxel set and median filter it applies to; none without one."""
    return [
        f"- Calibrated rule ({m.voxel_set}, median filter {mf_label(m.median_filter)}): the calibration's threshold "
        f"{m.calibrated_threshold:.6g} on the {map_label(m.calibrated_map)} for a "
        f"false-positive rate of {m.target_fpr:g}, plus the dilation and the guard: "
        f"Dice {_fmt(m.dice_calibrated)} ± {_fmt(m.dice_calibrated_std)} (Yen's here: {_fmt(m.dice_yen)}); "
        f"false-positive rate on these studies' healthy brain voxels {m.fpr_calibrated:.3g}."
        for m in results
        if math.isfinite(m.calibrated_threshold)
    ]


def per_subject_csv(results: Sequence[Metrics]) -> str:
    """``metrics_per_subject.csv``: one row per subject and median filter setting."""
    buffer = io.StringIO()
    columns = ["subject", "voxel_set", "median_filter", "brain_voxels", "label_voxels", "dice_ceil", "dice_yen"]
    columns += ["yen_threshold", "segmented_fraction", "rejected", "dice_calibrated", "fpr_calibrated"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for m in results:
        for s in m.subjects:
            writer.writerow(
                [
                    s.name,
                    m.voxel_set,
                    s.median_filter,
                    s.brain_voxels,
                    s.label_voxels,
                    f"{s.dice_ceil:.6f}",
                    f"{s.dice_yen:.6f}",
                    f"{s.yen_threshold:.6g}",
                    f"{s.segmented_fraction:.6f}",
                    int(s.rejected),
                    f"{s.dice_calibrated:.6f}",
                    f"{s.fpr_calibrated:.6g}",
                ]
            )
    return buffer.getvalue()


def pr_curves_png(results: Sequence[Metrics], title: str = "Precision-recall, pooled voxels") -> bytes:
    """A PNG with the precision-recall curve of each median filter setting and the prevalence (chance level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for m in results:
        style = "-" if m.voxel_set == results[0].voxel_set else ":"
        name = f"{m.voxel_set}, MF {mf_label(m.median_filter)}"
        ax.plot(m.recall, m.precision, style, label=f"{name} (AUPRC {_fmt(m.auprc, 3)})")
    if results and math.isfinite(results[0].prevalence):
        ax.axhline(results[0].prevalence, color="grey", linestyle="--", linewidth=1, label="prevalence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


class EvaluationReport:
    """Compute the metrics of the collected subjects and write the report files to ``output_dir``.

    Args:
        collector: the :class:`~scripts.collect.MapCollector` that the evaluator fills (each study with its label).
        output_dir: where ``metrics_per_subject.csv``, ``metrics.md``, ``metrics.json``, ``pr_curves.png`` go.
        median_filters: median filter sizes to evaluate (paper: off, 3, 5).
        dilation_radius: dilation after the Yen threshold.
        voxel_sets: the voxel sets to report (``"volume"`` needs maps of every slice, not masked: ``voxel_set:
            volume`` at scoring; ``"brain"`` can always be derived).
        ceil_grid: (start, stop, step) of the ceil Dice's threshold search.
        max_segmented_fraction: inference's guard on the Yen segmentation (None: off).
        calibrated: the calibrated rule, evaluated beside Yen where it applies (None: no calibration fits).
        settings: shown in ``metrics.md`` and ``metrics.json`` (data, weights, timesteps...).
        note: a line put above the table (e.g. that the data or the weights are made).
        method: the method's name, in the title and the printed summary.
    """

    def __init__(
        self,
        collector: MapCollector,
        output_dir: str | os.PathLike,
        median_filters: Sequence[int] = MEDIAN_FILTER_SIZES,
        dilation_radius: int = 1,
        settings: Mapping[str, object] | None = None,
        note: str = "",
        method: str = "ANDi",
        voxel_sets: Sequence[str] = ("brain",),
        ceil_grid: Sequence[float] = AUTHORS_CEIL_GRID,
        max_segmented_fraction: float | None = None,
        calibrated: CalibratedRule | None = None,
    ) -> None:
        self.collector = collector
        self.calibrated = calibrated
        self.voxel_sets = [str(v) for v in voxel_sets]
        self.ceil_grid = [float(v) for v in ceil_grid]
        self.max_segmented_fraction = as_optional_float(max_segmented_fraction)
        self.method = method
        self.output_dir = Path(output_dir)
        self.median_filters = [int(s) for s in median_filters]
        self.dilation_radius = int(dilation_radius)
        self.settings = dict(settings or {})
        self.note = note

    def write(self) -> list[Metrics]:
        """Compute, write the four files, print the summary table; returns the metrics per median filter."""
        if not self.collector.subjects:
            raise StudyError("no study was evaluated; nothing to report")
        results = evaluate_all(
            self.collector.subjects,
            self.median_filters,
            self.dilation_radius,
            self.voxel_sets,
            self.ceil_grid,
            self.max_segmented_fraction,
            self.calibrated,
        )
        out = self.output_dir
        atomic_write_bytes(per_subject_csv(results).encode(), out / CSV_FILE)
        report = markdown_report(results, self.settings, self.note, self.method)
        atomic_write_bytes(report.encode(), out / MARKDOWN_FILE)
        summary = {
            "subjects": [s.name for s in self.collector.subjects],
            "settings": {k: str(v) for k, v in self.settings.items()},
            "metrics": [{k: _finite_or_none(v) for k, v in m.summary().items()} for m in results],
        }
        atomic_write_bytes((json.dumps(summary, indent=2) + "\n").encode(), out / JSON_FILE)
        atomic_write_bytes(pr_curves_png(results), out / CURVES_FILE)
        n = n_studies(len(self.collector.subjects))
        print(f"{self.method} evaluation of {n}:\n{markdown_table(results)}", flush=True)
        for line in calibrated_lines(results):
            print(line[2:], flush=True)
        print(f"metrics written to {out.resolve()}", flush=True)
        return results
