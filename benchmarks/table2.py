"""The paper's Table 2 (ablation chain) on MADE (synthetic) data, through the bundle's workflows.

    python -m benchmarks.table2 --work_dir DIR [--out bundle/docs/table2_made_data.md] ...   # DIR: table1's
    python -m benchmarks.table2 --smoke --work_dir /tmp/t1_smoke --out /tmp/t2_smoke.md

The paper's chain (each row adds to the previous one): ANDi_base (DDPM trained with Gaussian noise, arithmetic
mean over t, mean over the modalities, scored with Gaussian noise) -> + max pooling over the modalities ->
+ geometric mean -> + pyramidal training (trained and scored with pyramidal noise) -> + median filter 5 ->
+ scoring with Gaussian noise (the full ANDi). The switches are the bundle's config keys: ``noise_type`` at training;
``aggregation``, ``channel_reduction`` and ``scoring_noise`` at scoring (``run evaluate``, ``evaluate.yaml`` merged
last, figures from its ``metrics.json``). The paper reports it on the BraTS'21 validation set; here it is on the same
made test sets as ``table1.py`` (tumour-like and MS-like lesions), with the same data, budget and options.

Two networks: the pyramid-trained ANDi of Table 1, and a Gaussian-trained ANDi (``train.yaml`` with ``noise_type
gaussian``: AutoDDPM's recipe, but trained here as ANDi's own weights, since weights record their method and ANDi's
inference refuses another method's; same data, budget and seed). Given Table 1's ``--work_dir`` (and the same
options), the pyramid network and the full ANDi evaluation are reused from it; otherwise they are trained here.
Every configuration is also shown with median filter off, 3 and 5.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench.data import Data, make_data
from benchmarks.bench.jobs import BenchmarkError, run_tasks
from benchmarks.bench.main import run_benchmark, table_main
from benchmarks.bench.methods import METHODS, Evaluation, Trained, andi_name, andi_overrides, evaluate, train
from benchmarks.bench.report import (
    failures_section,
    figure_rows,
    markdown_table,
    metric_header,
    metric_values,
    mf_name,
    minutes,
    settings_lines,
    wall,
)
from benchmarks.bench.settings import DATA_NOTE, FAMILIES, MEDIAN_FILTERS, Settings

DEFAULT_OUT = REPO / "bundle" / "docs" / "table2_made_data.md"
# Scoring configurations: (training noise, aggregation, channel reduction, scoring noise).
CONFIGS: dict[str, tuple[str, str, str, str]] = {
    "base": ("gaussian", "arithmetic", "mean", "gaussian"),
    "max": ("gaussian", "arithmetic", "max", "gaussian"),
    "geometric": ("gaussian", "geometric", "max", "gaussian"),
    "pyramid": ("pyramid", "geometric", "max", "pyramid"),
    "andi": ("pyramid", "geometric", "max", "gaussian"),
}
# The paper's rows: (label, configuration, median filter).
CHAIN: tuple[tuple[str, str, int], ...] = (
    ("ANDi_base", "base", 0),
    ("+ Max pooling", "max", 0),
    ("+ Geometric mean", "geometric", 0),
    ("+ Pyramidal training", "pyramid", 0),
    ("+ MF size 5", "pyramid", 5),
    ("+ Eval. with Gauss", "andi", 5),
)
NETWORKS = {"pyramid": "andi", "gaussian": "andi_gaussian"}  # training noise -> the method whose network it is


class Table2:
    """Trains (or finds) the two networks and evaluates the five configurations on both families."""

    def __init__(self, work_dir: Path, s: Settings, log: Callable[[str], None] = print) -> None:
        self.work_dir, self.s, self.log = work_dir, s, log
        self.trained: dict[str, Trained] = {}
        self.evaluations: dict[str, dict[str, Evaluation]] = {}
        self.failures: dict[str, str] = {}

    def train_network(self, noise: str) -> None:
        """Train (or find) the network of one training noise."""
        method = NETWORKS[noise]
        self.log(f"[table2] {noise}-trained network ({' + '.join(METHODS[method].train_configs)})")
        try:
            self.trained[noise] = train(self.work_dir, METHODS[method], self.s, self.log)
        except BenchmarkError as err:
            self.failures[f"{noise}-trained network"] = str(err)
            self.log(f"[table2] training FAILED: {err}")

    def evaluate_config(self, data: Data, key: str, family: str) -> None:
        """``run evaluate`` of one configuration on one family's test set."""
        train_noise, aggregation, reduction, noise = CONFIGS[key]
        trained = self.trained.get(train_noise)
        if trained is None:
            return
        self.log(
            f"[table2] {key} on {family}: trained with {train_noise} noise, {aggregation} mean over t, {reduction} "
            f"over modalities, scored with {noise} noise"
        )
        overrides = andi_overrides(trained, self.s, aggregation, reduction, noise)
        name = andi_name(train_noise, aggregation, reduction, noise)
        try:
            ev = evaluate(self.work_dir, name, family, data, METHODS["andi"].score_configs, overrides, self.s, self.log)
        except BenchmarkError as err:
            self.failures[f"{key} {family}"] = str(err)
            self.log(f"[table2] {key} {family} FAILED: {err}")
            return
        self.evaluations[key][family] = ev

    def run(self) -> None:
        """Make (or find) the data, train (or find) the two networks, evaluate every configuration on both
        families; up to ``jobs`` bundle commands side by side."""
        data = make_data(self.work_dir, self.s, self.log)
        run_tasks([partial(self.train_network, noise) for noise in NETWORKS], self.s.jobs)
        self.evaluations = {key: {} for key in CONFIGS}
        tasks = [partial(self.evaluate_config, data, key, family) for key in CONFIGS for family in FAMILIES]
        run_tasks(tasks, self.s.jobs)

    def chain_table(self) -> str:
        rows = []
        for label, key, mf in CHAIN:
            train_noise, aggregation, reduction, noise = CONFIGS[key]
            labels = [label, train_noise, aggregation, reduction, noise, mf_name(mf)]
            rows.append((labels, metric_values(self.evaluations.get(key, {}), mf), True))
        header = ["", "training noise", "mean over t", "over modalities", "scoring noise", "MF", *metric_header()]
        return markdown_table(header, figure_rows(rows))

    def grid_table(self) -> str:
        rows = []
        for key, (train_noise, aggregation, reduction, noise) in CONFIGS.items():
            for mf in MEDIAN_FILTERS:
                labels = [train_noise, aggregation, reduction, noise, mf_name(mf)]
                rows.append((labels, metric_values(self.evaluations.get(key, {}), mf), True))
        header = ["training noise", "mean over t", "over modalities", "scoring noise", "MF", *metric_header()]
        return markdown_table(header, figure_rows(rows))

    def time_table(self) -> str:
        rows = []
        for noise, trained in self.trained.items():
            rows.append([f"train ({noise} noise)", " + ".join(trained.method.train_configs), wall([trained.step])])
        for key, evaluations in self.evaluations.items():
            for family, ev in evaluations.items():
                rows.append([f"evaluate {key} on {family}", ev.name, wall([ev.step])])
        return markdown_table(["step", "what", "wall time"], rows)

    def report(self, total_seconds: float) -> str:
        s = self.s
        title = f"# Table 2 (ablation) on {DATA_NOTE} (not the paper's BraTS'21 validation figures)"
        if s.smoke:
            title += " - SMOKE RUN: absurdly small settings, the figures mean nothing"
        families = ", ".join(f"**{k}** = {v}" for k, v in FAMILIES.items())
        lines = [
            title,
            "",
            f"Made (synthetic) data by `scripts.synthetic`; column groups: {families} lesions. Written by "
            "`benchmarks/table2.py`; every figure from the `metrics.json` of a `run evaluate`. Each row adds to the "
            "one above, as in the paper. Bold: the best figure of the column.",
            "",
            self.chain_table(),
            *settings_lines(s),
            f"- ANDi scoring: t = range(75, 200, {s.t_stride}) (paper: every t)"
            + (" - shortened to fit the CPU budget." if s.t_stride != 1 else "."),
            "- The Gaussian-trained network is `train.yaml` with `noise_type: gaussian` (AutoDDPM's recipe, trained as "
            "ANDi's weights); the pyramid-trained one is Table 1's ANDi.",
            "",
            f"## Every configuration with median filter off, 3 and 5 ({DATA_NOTE})",
            "",
            self.grid_table(),
            f"## Wall time ({DATA_NOTE})",
            "",
            self.time_table(),
            f"Total wall time of this run: {minutes(total_seconds)} (steps found done in the work folder take no "
            "time).",
            "",
        ]
        return "\n".join(lines + failures_section(self.failures))


def main(argv: list[str] | None = None) -> int:
    return table_main("table2", "Table 2 (ablation)", Table2, DEFAULT_OUT, __doc__, argv)


if __name__ == "__main__":
    run_benchmark(main)
