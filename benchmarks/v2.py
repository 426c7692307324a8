"""The ``v2`` profile (configs/v2.yaml) beside the default, on MADE (synthetic) data, at the demo budget.

    python -m benchmarks.v2 --work_dir /work/faithful     # about 1 hour on 2 CPU cores (the training: ~45 min)

The data and the default model are those of ``benchmarks/faithful.py`` in the same work folder (its functions are
reused): the 24 + 2 made healthy studies of the demo for training, ``--n_test`` made test studies per lesion family.
v2 is trained with the bundle's own ``run training`` and ``v2.yaml`` merged last (v-prediction, the shifted cosine
schedule, pyramid discount 0.9), at the demo budget of the default (``cpu`` preset, 600 iterations of 16 slices, bf16
autocast), and evaluated with ``run evaluate`` and ``v2.yaml`` at its own window range(25, 125), every 25th step
(t = 25, 50, 75, 100), for the median filters off, 3, 4 and 5. The default model (``train/range_pyramid``, the
shipped demo weights) is evaluated at its own window range(75, 200), stride 25 (t = 75, ..., 175), for off, 3 and 5:
its evaluations of faithful.py (``eval/range_<family>``) are read when they are there (``--default_eval cached``),
or run now under ``eval/default_<family>`` (``--default_eval run``).

Every evaluation runs without the guard (raw Yen) on the voxel set ``volume``, as in faithful.py. The report goes
to ``bundle/docs/v2_made_data.md`` (``--report``); steps already done are reused, so a stopped run resumes.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import fmt, markdown_table, minutes, write_report
from benchmarks.bench.settings import DATA_NOTE, Settings
from benchmarks.faithful import FAMILIES, FAMILY_NAMES, evaluate, log, make_data, metrics, train

V2_PROFILE = ("v2.yaml",)
V2_MEDIAN_FILTERS = (0, 3, 4, 5)
DEFAULT_MEDIAN_FILTERS = (0, 3, 5)
VOXEL_SET = "volume"


def recorded_seconds(out: Path) -> float:
    """The wall time a cached step recorded in ``out/table_command.json`` (NaN when none)."""
    record = out / "table_command.json"
    return float(json.loads(record.read_text()).get("seconds", float("nan"))) if record.is_file() else float("nan")


def was_resumed(out: Path) -> bool:
    """Whether the step recorded in ``out/table_command.json`` finished on a second attempt (its time is the last's)."""
    record = out / "table_command.json"
    return record.is_file() and bool(json.loads(record.read_text()).get("resumed"))


def cached_default(work: Path, family: str) -> Path:
    """Where benchmarks/faithful.py evaluated the default model ('range') on ``family``."""
    return work / "eval" / f"range_{family}"


def default_evaluation(work: Path, family: str, datalist: Path, mode: str, s: Settings) -> tuple[Path, float]:
    """The default model's evaluation of ``family``: faithful.py's cached one (``mode == "cached"``, when there), or
    run now."""
    cached = cached_default(work, family)
    if mode == "cached" and (cached / "metrics.json").is_file():
        log(f"  eval default {family}: read from {cached} (benchmarks/faithful.py's 'range')")
        return cached, recorded_seconds(cached)
    checkpoint = work / "train" / "range_pyramid" / "model.pt"
    return evaluate(work, "default", family, datalist, {"weights": checkpoint}, s)


def family_table(outs: dict[str, dict[str, Path]], family: str, seconds: dict[str, float]) -> str:
    """One family: a row per model and median filter (default: off, 3, 5; v2: off, 3, 4, 5), with AUPRC, ceil
    Dice, Dice_Yen, the median share of the brain that Yen marks, and the evaluation's minutes."""
    header = ["model", "MF", "AUPRC", "⌈Dice⌉", "Dice_Yen", "brain marked by Yen (median)", "evaluation (all MF)"]
    rows = []
    for model, sizes in (("default", DEFAULT_MEDIAN_FILTERS), ("v2", V2_MEDIAN_FILTERS)):
        for size in sizes:
            m = metrics(outs[model][family], VOXEL_SET, size)
            cells = [model, str(size or "off"), fmt(m["auprc"]), fmt(m["ceil_dice"]), fmt(m["dice_yen"])]
            cells += [f"{100 * m['segmented_fraction_median']:.1f}%", minutes(seconds[f"eval {model} {family}"])]
            rows.append(cells)
    return markdown_table(header, rows)


def report_text(
    command: str,
    n_test: int,
    outs: dict[str, dict[str, Path]],
    seconds: dict[str, float],
    total: float,
    default_source: str,
    timing_note: str,
) -> list[str]:
    """The Markdown report: both models side by side for each family, then the wall times."""
    v2_total = sum(v for k, v in seconds.items() if k.startswith(("train v2", "eval v2")))
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    text = [
        "# The v2 profile beside the default, on made (synthetic) data",
        "",
        f"Every figure here is on **{DATA_NOTE}**: the demo's made healthy brains for training, {n_test} made test "
        "studies per lesion family. They show the profile working in the pipeline at the demo budget; they say "
        "nothing about real scans.",
        "",
        f"Printed by `{command}` on {today} (UTC); this file is written by the script.",
        "",
        "- **default**: `inference.yaml` as it ships (linear betas 1e-4 .. 0.02, epsilon prediction, pyramid discount "
        "0.8), the shipped demo weights (`train/range_pyramid` of benchmarks/faithful.py); scored at range(75, 200), "
        f"stride 25 (t = 75, 100, ..., 175). {default_source}",
        "- **v2**: `v2.yaml` merged last for training and scoring (v-prediction, the cosine schedule in log-SNR "
        "shifted by 2 log(64 / 128), pyramid discount 0.9), trained with `run training` at the same budget (`cpu` "
        "preset, 600 iterations of 16 slices, bf16 autocast) on the same studies; scored at range(25, 125), stride 25 "
        "(t = 25, 50, 75, 100).",
        "",
        "Voxel set `volume` (every voxel of the 128 x 128 x D scoring grid), raw Yen (no guard); ⌈Dice⌉ is the "
        "paper's (mean of per-subject Dice at one threshold); MF the median filter (4: v2's own size).",
    ]
    for family in FAMILIES:
        text += ["", f"## {FAMILY_NAMES[family]} ({DATA_NOTE})", "", family_table(outs, family, seconds).rstrip("\n")]
    text += [
        "",
        "## Wall times (2 CPU cores, shared: other jobs ran beside some steps, so these are upper bounds)",
        "",
        timing_note,
        "",
        *[f"- {k}: {minutes(v)}" for k, v in seconds.items()],
        f"- v2 in all (training and its four evaluations): {minutes(v2_total)}",
        f"- this run of the script: {minutes(total)} (steps found done are reused, not rerun)",
    ]
    return text


def main() -> None:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="/work/faithful")
    parser.add_argument("--n_test", type=int, default=4, help="test studies per lesion family")
    parser.add_argument("--default_eval", choices=("cached", "run"), default="cached")
    parser.add_argument("--report", default=str(REPO / "bundle" / "docs" / "v2_made_data.md"))
    parser.add_argument("--train_only", action="store_true", help="stop after the v2 training")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work_dir)
    s = Settings(threads=args.threads)
    start = time.perf_counter()
    log(f"made data in {work / 'data'} ...")
    train_list, tests = make_data(work, args.n_test)
    v2_weights, t_train = train(work, "v2", train_list, "pyramid", s, profiles=V2_PROFILE)
    seconds = {
        "train v2": t_train,
        "train default (benchmarks/faithful.py)": recorded_seconds(work / "train" / "range_pyramid"),
    }
    if args.train_only:
        log(f"v2 weights: {v2_weights}")
        return
    sizes = json.dumps(list(V2_MEDIAN_FILTERS))
    outs: dict[str, dict[str, Path]] = {"default": {}, "v2": {}}
    for family in FAMILIES:
        overrides = {"weights": v2_weights, "median_filter_sizes": sizes}
        outs["v2"][family], seconds[f"eval v2 {family}"] = evaluate(
            work, "v2", family, tests[family], overrides, s, profiles=V2_PROFILE
        )
        outs["default"][family], seconds[f"eval default {family}"] = default_evaluation(
            work, family, tests[family], args.default_eval, s
        )
    command = f"python -m benchmarks.v2 --work_dir {work}"
    if args.default_eval != "cached":
        command += f" --default_eval {args.default_eval}"
    if args.threads != parser.get_default("threads"):
        command += f" --threads {args.threads}"
    timing_note = (
        f"This script's steps ran with OMP_NUM_THREADS={args.threads}, benchmarks/faithful.py's with its own "
        "setting (2 by default), so the two models' minutes are not a like-for-like speed comparison."
    )
    if was_resumed(work / "train" / "v2"):
        timing_note += (
            " The v2 training finished on a second attempt (an earlier one was stopped before its first "
            "checkpoint, so it started over, reusing the slice cache); its time is that attempt's."
        )
    cached = [f for f in FAMILIES if outs["default"][f] == cached_default(work, f)]
    default_source = (
        f"Its figures for {', '.join(FAMILY_NAMES[f] for f in cached)} are benchmarks/faithful.py's evaluations "
        f"(`{work}/eval/range_<family>`: same weights, test studies and options), read, not rerun."
        if cached
        else "Evaluated by this script."
    )
    text = report_text(command, args.n_test, outs, seconds, time.perf_counter() - start, default_source, timing_note)
    report = Path(args.report)
    write_report("\n".join(text) + "\n", report)
    log("\n".join(text))
    log(f"written to {report}")


if __name__ == "__main__":
    run_benchmark(main)
