"""The paper's Table 1 on MADE (synthetic) data: every method trained and scored through the bundle's workflows.

    python -m benchmarks.table1 [--work_dir DIR] [--out bundle/docs/table1_made_data.md] [--iterations 400] ...
    python -m benchmarks.table1 --smoke --work_dir /tmp/t1_smoke --out /tmp/t1_smoke.md   # a few minutes

Made data (``scripts.synthetic``): one healthy training set with healthy validation studies, and two anomalous test
sets, large tumour-like lesions and many small MS-like lesions (the two column groups, like BraTS and Shifts in the
paper). Methods (rows, each with median filter off, 3 and 5):

* FLAIR thresholding (semi-supervised: its segmentation threshold is tuned with ``run tune_threshold`` on labelled
  validation studies of each family; no training). The main table's figures need no threshold; the tuned
  thresholds and the Dice they give on the test sets are a second table.
* DAE (``dae_train.yaml``): with the mean over the modalities (the original) and with max pooling.
* AnoDDPM (``anoddpm_train.yaml``, simplex noise), AutoDDPM (``autoddpm_train.yaml``, Gaussian noise; tau from
  ``run calibrate`` on the healthy validation studies), ANDi (``train.yaml``, pyramidal noise).

Every trainable method is trained with ``run training`` on the same healthy studies with the same budget (same
iterations, batch size, validation); every method is scored with ``run evaluate`` (``evaluate.yaml`` merged last) on
the same test sets, and its figures are read from the ``metrics.json`` that evaluation writes. The reverse chains of
AnoDDPM and AutoDDPM and ANDi's t-range stride are shortened from the paper's by default to fit a CPU; the output
says so. The work folder keeps data, weights and evaluations: a run started again with the same options reuses them
(``benchmarks/table2.py`` reuses them too). Not the paper's figures: made data, tiny budgets.

Budget of the defaults (2 CPU cores with bf16 support): every trainable method 400 iterations x batch 16 of 64x64
slices (cpu presets). Two bundle commands run side by side (``--jobs 2``), one thread each: AnoDDPM (about half
of all the work: its simplex noise costs about 2 s per reverse step of one study's 59 slices on one core) on one
core, the other methods one after the other on the other; about 30 minutes in all. One thread per command, not two:
on this 2-core machine a training step with 2 threads took 8-20x longer while another process kept a core busy.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench.data import Data, make_data
from benchmarks.bench.jobs import BenchmarkError, Step, run_tasks
from benchmarks.bench.main import run_benchmark, table_main
from benchmarks.bench.methods import (
    FLAIR_CONFIGS,
    FLAIR_OVERRIDES,
    METHODS,
    Evaluation,
    Trained,
    andi_name,
    andi_overrides,
    anoddpm_overrides,
    autoddpm_overrides,
    calibrate,
    dice_at_threshold,
    evaluate,
    scoring_overrides,
    train,
    tune_threshold,
)
from benchmarks.bench.report import (
    failures_section,
    figure_rows,
    fmt,
    markdown_table,
    metric_header,
    metric_values,
    mf_name,
    minutes,
    settings_lines,
    wall,
)
from benchmarks.bench.settings import DATA_NOTE, FAMILIES, MEDIAN_FILTERS, Settings

DEFAULT_OUT = REPO / "bundle" / "docs" / "table1_made_data.md"


class Table1:
    """Runs the methods one after the other and keeps what is needed for the report."""

    def __init__(self, work_dir: Path, s: Settings, log: Callable[[str], None] = print) -> None:
        self.work_dir, self.s, self.log = work_dir, s, log
        self.evaluations: dict[str, dict[str, Evaluation]] = {}  # row key -> family -> evaluation
        self.trained: dict[str, Trained] = {}
        self.scoring: dict[str, list[Step]] = {}  # method -> scoring steps (tuning, calibration, evaluations)
        self.flair_tuning: dict[tuple[str, int], Step] = {}
        self.failures: dict[str, str] = {}
        self.data: Data | None = None

    def evaluate_all_families(
        self, key: str, method: str, name: str, configs: tuple[str, ...], overrides: dict
    ) -> None:
        """``run evaluate`` of one configuration on each family's test set."""
        self.evaluations[key] = {}
        for family in FAMILIES:
            ev = evaluate(self.work_dir, name, family, self.data, configs, overrides, self.s, self.log)
            self.evaluations[key][family] = ev
            self.scoring.setdefault(method, []).append(ev.step)

    def flair(self) -> None:
        """FLAIR thresholding: evaluate; tune the threshold on labelled validation studies for each median filter."""
        self.evaluate_all_families("flair", "flair", "flair", FLAIR_CONFIGS, FLAIR_OVERRIDES)
        for family in FAMILIES:
            for mf in MEDIAN_FILTERS:
                step = tune_threshold(self.work_dir, self.data, family, mf, self.s, self.log)
                self.flair_tuning[(family, mf)] = step
                self.scoring["flair"].append(step)

    def dae(self) -> None:
        trained = self.trained["dae"] = train(self.work_dir, METHODS["dae"], self.s, self.log)
        configs = METHODS["dae"].score_configs
        for reduction in ("mean", "max"):
            overrides = {**scoring_overrides(trained, self.s), "channel_reduction": reduction}
            self.evaluate_all_families(f"dae_{reduction}", "dae", f"dae_{reduction}", configs, overrides)

    def anoddpm(self) -> None:
        trained = self.trained["anoddpm"] = train(self.work_dir, METHODS["anoddpm"], self.s, self.log)
        overrides = anoddpm_overrides(trained, self.s)
        self.evaluate_all_families("anoddpm", "anoddpm", "anoddpm", METHODS["anoddpm"].score_configs, overrides)

    def autoddpm(self) -> None:
        trained = self.trained["autoddpm"] = train(self.work_dir, METHODS["autoddpm"], self.s, self.log)
        step = calibrate(self.work_dir, self.data, trained, self.s, self.log)
        self.scoring.setdefault("autoddpm", []).append(step)
        overrides = autoddpm_overrides(trained, self.s, step.result["masking_threshold"])
        self.evaluate_all_families("autoddpm", "autoddpm", "autoddpm", METHODS["autoddpm"].score_configs, overrides)

    def andi(self) -> None:
        trained = self.trained["andi"] = train(self.work_dir, METHODS["andi"], self.s, self.log)
        switches = ("geometric", "max", "gaussian")  # the paper's ANDi
        overrides = andi_overrides(trained, self.s, *switches)
        name = andi_name("pyramid", *switches)
        self.evaluate_all_families("andi", "andi", name, METHODS["andi"].score_configs, overrides)

    def run_method(self, method: str) -> None:
        """Train (if needed) and score one method; a failure is kept for the report and the other methods go on."""
        self.log(f"[table1] {method}: start")
        try:
            getattr(self, method)()
        except BenchmarkError as err:
            self.failures[method] = str(err)
            self.log(f"[table1] {method} FAILED: {err}")
        else:
            self.log(f"[table1] {method}: done")

    def run(self) -> None:
        """Make the data, then the methods: one after the other, the cheap ones first; or ``jobs`` side by side,
        AnoDDPM (the costliest: about half of the whole) on one worker while the others go through the rest."""
        self.data = make_data(self.work_dir, self.s, self.log)
        order = ("flair", "dae", "andi", "autoddpm", "anoddpm")
        if self.s.jobs > 1:
            order = ("anoddpm", "flair", "dae", "andi", "autoddpm")
        run_tasks([partial(self.run_method, m) for m in order], self.s.jobs)

    # ------------------------------------------------------------------------------------------------ report

    def main_table(self) -> str:
        """Rows per method and median filter; columns AUPRC, ceil Dice, Dice_Yen per family."""
        layout = [
            ("Semi-sup.", "Thresholding (FLAIR)", "flair", MEDIAN_FILTERS, False),
            ("Unsupervised", "DAE (mean over modalities)", "dae_mean", (0,), True),
            ("Unsupervised", "DAE + modality max pooling", "dae_max", MEDIAN_FILTERS, True),
            ("Unsupervised", "AnoDDPM (simplex noise)", "anoddpm", MEDIAN_FILTERS, True),
            ("Unsupervised", "AutoDDPM (Gaussian noise, no LPIPS)", "autoddpm", MEDIAN_FILTERS, True),
            ("Unsupervised", "ANDi (pyramidal training noise)", "andi", MEDIAN_FILTERS, True),
        ]
        rows = []
        for group, label, key, filters, ranked in layout:
            evaluations = self.evaluations.get(key, {})
            for mf in filters:
                rows.append(([group, label, mf_name(mf)], metric_values(evaluations, mf), ranked))
        return markdown_table(["", "method", "MF", *metric_header()], figure_rows(rows))

    def flair_table(self) -> str:
        """The semi-supervised part of FLAIR thresholding: the tuned thresholds and the Dice they give on the test."""
        rows = []
        for family in FAMILIES:
            ev = self.evaluations.get("flair", {}).get(family)
            for mf in MEDIAN_FILTERS:
                step = self.flair_tuning.get((family, mf))
                if step is None or ev is None:
                    continue
                thr = float(step.result["threshold"])
                try:
                    test_dice = fmt(dice_at_threshold(ev, thr, mf))
                except BenchmarkError as err:
                    test_dice = f"n/a ({err})"
                validation = f"{fmt(step.result['dice'])} ({step.result['studies']} studies)"
                rows.append([family, mf_name(mf), f"{thr:.4g}", validation, test_dice])
        header = ["family", "MF", "threshold (scaled FLAIR)", "Dice, labelled validation", "Dice, test set"]
        return markdown_table(header, rows)

    def budget_table(self) -> str:
        """What each method was given: training budget and wall time, scoring settings and wall time."""
        s = self.s
        chain = {
            "flair": "no network; threshold tuned per family and MF on labelled validation studies",
            "dae": "one pass per slice; reductions mean and max",
            "anoddpm": f"simplex noise, t_upper {s.anoddpm_t_upper} (paper 250), full reverse chain",
            "autoddpm": (
                f"Gaussian noise, t_upper {s.autoddpm_t_upper} (paper 200), t_inpaint {s.autoddpm_t_inpaint} "
                f"(paper 50), resamplings {s.autoddpm_resamplings} (paper 5); tau: 99th percentile on "
                f"{s.calibration_slices} healthy validation slices per study"
            ),
            "andi": f"Gaussian noise at t = 75..200 every {s.t_stride} (paper: every t), geometric mean, max",
        }
        rows = []
        for method in ("flair", "dae", "anoddpm", "autoddpm", "andi"):
            trained = self.trained.get(method)
            if trained is not None:
                config = " + ".join(trained.method.train_configs)
                budget = f"{s.iterations} x {s.batch_size}"
                train_wall = wall([trained.step])
            else:
                config, budget, train_wall = ("none" if method == "flair" else "not trained"), "-", "-"
            rows.append([method, config, budget, train_wall, chain[method], wall(self.scoring.get(method, []))])
        header = ["method", "training configs", "iterations x batch", "training wall time", "scoring", "scoring wall"]
        return markdown_table(header, rows)

    def report(self, total_seconds: float) -> str:
        s = self.s
        title = f"# Table 1 on {DATA_NOTE} (not the paper's BraTS'21 / Shifts figures)"
        if s.smoke:
            title += " - SMOKE RUN: absurdly small settings, the figures mean nothing"
        families = ", ".join(f"**{k}** = {v}" for k, v in FAMILIES.items())
        shortened = s.shortened() + ([f"ANDi t_stride {s.t_stride} (paper 1)"] if s.t_stride != 1 else [])
        lines = [
            title,
            "",
            f"Made (synthetic) data, made by `scripts.synthetic`; column groups: {families} lesions (in the place of "
            "BraTS'21 and Shifts). Written by `benchmarks/table1.py`; every figure from the `metrics.json` of a "
            "`run evaluate`. Bold: the best unsupervised figure of the column (FLAIR thresholding is semi-supervised "
            "and not ranked, as in the paper).",
            "",
            self.main_table(),
            *settings_lines(s),
            "- Shortened from the paper to fit the CPU budget: " + ("; ".join(shortened) if shortened else "nothing"),
            "- AUPRC and ⌈Dice⌉ pool the brain voxels of a family's test set; Dice_Yen is the mean over its studies "
            "(per-study Yen threshold + one 3D dilation). Per-study figures: `<work_dir>/eval/*/`.",
            "",
            f"## Budget and wall time ({DATA_NOTE})",
            "",
            self.budget_table(),
            f"Total wall time of this run: {minutes(total_seconds)} (steps found done in the work folder take no "
            "time; their wall time is the one recorded when they ran).",
            "",
            f"## FLAIR thresholding, semi-supervised: tuned thresholds ({DATA_NOTE})",
            "",
            f"Threshold of best Dice on {s.n_val_labelled} labelled validation studies per family (`run "
            "tune_threshold`), applied to that family's test set (map > threshold, after the median filter).",
            "",
            self.flair_table(),
        ]
        return "\n".join(lines + failures_section(self.failures))


def main(argv: list[str] | None = None) -> int:
    return table_main("table1", "Table 1", Table1, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    run_benchmark(main)
