"""The ``v2`` profile (configs/v2.yaml) beside the default, on MADE (synthetic) data, at the demo budget.

    python -m benchmarks.v2 --work_dir /work/faithful --seeds 3 --train_seeds 2 --jobs 2   # after benchmarks.faithful

The data and the default model are those of ``benchmarks/faithful.py`` in the same work folder (its functions are
reused): the 24 + 2 made healthy studies of the demo for training, ``--n_test`` made test studies per lesion family.
Both models are trained with the bundle's own ``run training`` at the demo budget (``cpu`` preset, 600 iterations of
16 slices, float32 on every machine): the default exactly as faithful.py's ``range_pyramid`` (the
same step: a model trained by either script is reused by the other), v2 with ``v2.yaml`` merged last and its own
noise (its global batch of 128 and 50,000 iterations brought down to the budget). v2 is evaluated with ``run
evaluate`` and ``v2.yaml`` at its own window range(25, 125), every 25th step (t = 25, 50, 75, 100), for the median
filters off, 3, 4 and 5; the default at range(75, 200), stride 25 (t = 75, ..., 175), for off, 3 and 5. With
``--default_eval cached`` (the default), the default model is faithful.py's: it trains it and evaluates it for the
same trainings and noise seeds (``eval/range..._<family>``, or kept in its ``--keep_dir``, given here as
``--faithful_keep_dir``), and this script reads those evaluations after its own, stopping with one line where one is
missing (run faithful.py first); ``--default_eval run`` trains and evaluates the default here, under
``eval/default..._<family>``.

``--train_seeds K`` trains each model K times and ``--seeds N`` scores each with N noise seeds; the tables give mean ±
SD over the K x N runs. ``--jobs J`` runs J of v2's evaluations side by side (each with ``--threads``). Every
evaluation runs without the guard (raw Yen) on the voxel set ``volume``, as in faithful.py. The report goes to
``bundle/docs/v2_made_data.md`` (``--report``); steps already done are reused, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench.jobs import BenchmarkError, Step, run_tasks
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import markdown_table, wall_time_lines, write_report
from benchmarks.bench.settings import DATA_NOTE, Settings
from benchmarks.bench.spread import fmt_spread
from benchmarks.faithful import (
    FAMILIES,
    FAMILY_NAMES,
    add_run_arguments,
    evaluate,
    evaluation_done,
    log,
    make_data,
    metrics,
    run_settings,
    run_tag,
    train,
    train_step,
)

V2_PROFILE = ("v2.yaml",)
V2_MEDIAN_FILTERS = (0, 3, 4, 5)
DEFAULT_MEDIAN_FILTERS = (0, 3, 5)
VOXEL_SET = "volume"


def default_evaluation(
    work: Path, family: str, datalist: Path, weights: Path, training: int, seed: int, mode: str, s: Settings
) -> tuple[Path, Step]:
    """The default model's evaluation of ``family`` for one training and noise seed: with ``mode == "cached"``,
    faithful.py's (``eval/range..._<family>``, in the work folder or kept in ``s.keep_dir``: faithful.py's kept
    folder); with ``"run"``, one run now under ``eval/default..._<family>``.

    Raises:
        BenchmarkError: ``"cached"`` and faithful.py has not evaluated it (each step has one owner: v2.py does not run
            faithful.py's evaluations, nor a second copy of them).
    """
    cached = work / "eval" / f"{run_tag('range', training, seed)}_{family}"
    if mode == "run":
        tag = run_tag("default", training, seed)
        return evaluate(work, tag, family, datalist, {"weights": weights, "seed": seed}, s)
    faithful_run = (run_tag("range", training, seed), family, datalist, {"weights": weights, "seed": seed})
    found = evaluation_done(work, *faithful_run, s)
    if found is None:
        raise BenchmarkError(
            f"{cached}: benchmarks/faithful.py has not evaluated the default model there yet; run it first with the "
            "same --work_dir, --seeds and --train_seeds (and give its --keep_dir as --faithful_keep_dir), or give "
            "--default_eval run"
        )
    log(f"  eval {cached.name}: read from {cached} (benchmarks/faithful.py's)")
    return cached, found


def family_table(outs: dict[str, list[Path]], family: str) -> str:
    """One family: a row per model and median filter (default: off, 3, 5; v2: off, 3, 4, 5), with AUPRC, ceil Dice,
    Dice_Yen and the median share of the brain that Yen marks, each as mean ± SD over the runs (trainings x noise
    seeds) where there is more than one."""
    header = ["model", "MF", "runs", "AUPRC", "⌈Dice⌉", "Dice_Yen", "brain marked by Yen (median)"]
    rows = []
    for model, sizes in (("default", DEFAULT_MEDIAN_FILTERS), ("v2", V2_MEDIAN_FILTERS)):
        runs = outs[f"{model} {family}"]
        for size in sizes:
            ms = [metrics(out, VOXEL_SET, size) for out in runs]
            cells = [model, str(size or "off"), str(len(ms))]
            cells += [fmt_spread([m[k] for m in ms]) for k in ("auprc", "ceil_dice", "dice_yen")]
            cells.append(fmt_spread([100 * m["segmented_fraction_median"] for m in ms], 1) + "%")
            rows.append(cells)
    return markdown_table(header, rows)


def report_text(
    command: str, args: argparse.Namespace, outs: dict[str, list[Path]], seconds: dict[str, Step], total: float
) -> list[str]:
    """The Markdown report: both models side by side for each family, then the wall times."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    text = [
        "# The v2 profile beside the default, on made (synthetic) data",
        "",
        f"Every figure here is on **{DATA_NOTE}**: the demo's made healthy brains for training, {args.n_test} made "
        "test studies per lesion family. They show the profile working in the pipeline at the demo budget; they say "
        "nothing about real scans.",
        "",
        f"Printed by `{command}` on {today} (UTC); this file is written by the script. Figures are mean ± SD over "
        f"{args.train_seeds} training(s) x {args.seeds} noise seed(s) of each model where there is more than one run.",
        "",
        "- **default**: `inference.yaml` and `train.yaml` as they ship, trained as benchmarks/faithful.py's "
        "`range_pyramid` (the `cpu` preset, 600 iterations of 16 slices; its first training is the shipped demo "
        "weights' recipe); scored at range(75, 200), stride 25 (t = 75, 100, ..., 175).",
        "- **v2**: `v2.yaml` merged last for training and scoring (every choice it makes, as UAD-IMAG has it: the "
        "model card's table), trained with `run training` at the same budget (the profile's 50,000 iterations of 128 "
        "slices brought down to 600 of 16) on the same studies; scored at its own range(25, 125), stride 25 "
        "(t = 25, 50, 75, 100).",
        "",
        "Voxel set `volume` (every voxel of the 128 x 128 x D scoring grid), raw Yen (no guard); ⌈Dice⌉ is the "
        "paper's (mean of per-subject Dice at one threshold); MF the median filter (4: v2's own size).",
    ]
    for family in FAMILIES:
        text += ["", f"## {FAMILY_NAMES[family]} ({DATA_NOTE})", "", family_table(outs, family).rstrip("\n")]
    text += [
        "",
        *wall_time_lines(
            seconds,
            total,
            f"Wall times ({args.jobs} command(s) side by side, {args.threads} thread(s) each; evaluations read from "
            "faithful.py's run count at their own time)",
        ),
    ]
    return text


def main() -> None:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_run_arguments(parser, "/work/faithful")
    parser.add_argument(
        "--default_eval",
        choices=("cached", "run"),
        default="cached",
        help="cached: read faithful.py's evaluations of the default model (run it first); run: evaluate it here",
    )
    parser.add_argument(
        "--faithful_keep_dir",
        default=None,
        help="faithful.py's --keep_dir, where its kept evaluations of the default model are read from (cached)",
    )
    parser.add_argument("--report", default=str(REPO / "bundle" / "docs" / "v2_made_data.md"))
    parser.add_argument("--train_only", action="store_true", help="stop after the trainings")
    args = parser.parse_args()
    work = Path(args.work_dir)
    s = run_settings(args)
    start = time.perf_counter()
    log(f"made data in {work / 'data'} ...")
    train_list, tests = make_data(work, args.n_test)
    seconds: dict[str, Step] = {}
    weights: dict[str, list[Path]] = {"default": [], "v2": []}
    for k in range(args.train_seeds):
        # v2 at the demo budget: the profile's own noise, 16 slices per iteration (its global batch of 128 off)
        w, seconds[f"train v2 seed {k}"] = train(
            work, "v2", train_list, None, s, profiles=V2_PROFILE, seed=k, extra={"global_batch_size": "null"}
        )
        weights["v2"].append(w)
    for k in range(args.train_seeds):
        # the default exactly as faithful.py trains it (the same step in the same work folder); with cached
        # evaluations, faithful.py trains and evaluates it, and only the weights' path (in their commands) is needed
        if args.default_eval == "run":
            w, seconds[f"train default seed {k}"] = train(work, "range_pyramid", train_list, "pyramid", s, seed=k)
        else:
            w = train_step(work, "range_pyramid", train_list, "pyramid", seed=k)[0]
        weights["default"].append(w)
    if args.train_only:
        log(f"weights: {weights}")
        return
    sizes = json.dumps(list(V2_MEDIAN_FILTERS))
    outs: dict[str, list[Path]] = {}
    runs = [(k, n, family) for k in range(args.train_seeds) for n in range(args.seeds) for family in FAMILIES]
    done: dict[tuple[int, int, str], tuple[Path, Step]] = {}

    def v2_evaluation(k: int, n: int, family: str) -> None:
        overrides = {"weights": weights["v2"][k], "median_filter_sizes": sizes, "seed": n}
        done[k, n, family] = evaluate(work, run_tag("v2", k, n), family, tests[family], overrides, s, V2_PROFILE)

    # v2's own evaluations first (--jobs at once): the default's may be faithful.py's, still running beside
    run_tasks([partial(v2_evaluation, *run) for run in runs], args.jobs)
    for k, n, family in runs:
        out, seconds[f"eval {run_tag('v2', k, n)} {family}"] = done[k, n, family]
        outs.setdefault(f"v2 {family}", []).append(out)
    # faithful.py's evaluations are read with its kept folder (its --keep_dir), the default's own ones with v2's
    faithful_s = replace(s, keep_dir=args.faithful_keep_dir) if args.default_eval == "cached" else s
    for k, n, family in runs:
        out, seconds[f"eval {run_tag('default', k, n)} {family}"] = default_evaluation(
            work, family, tests[family], weights["default"][k], k, n, args.default_eval, faithful_s
        )
        outs.setdefault(f"default {family}", []).append(out)
    command = f"python -m benchmarks.v2 --work_dir {work} --seeds {args.seeds} --train_seeds {args.train_seeds}"
    if args.default_eval != "cached":
        command += f" --default_eval {args.default_eval}"
    text = report_text(command, args, outs, seconds, time.perf_counter() - start)
    report = Path(args.report)
    write_report("\n".join(text) + "\n", report)
    log("\n".join(text))
    log(f"written to {report}")


if __name__ == "__main__":
    run_benchmark(main)
