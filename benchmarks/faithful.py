"""ANDi as published, before and after, on MADE (synthetic) data: what each departure from the authors' code cost.

    python -m benchmarks.faithful --work_dir /work/faithful   # about 4 hours on 2 CPU cores (one seed, one training)

Every model is trained with the bundle's own ``run training`` at the demo budget (``cpu`` preset, 600 iterations of
16 slices, in float32 on every machine; the 22 + 2 made healthy studies of the demo) and every figure
comes from ``run evaluate`` on one made test set: ``--n_test`` studies per lesion family (``scripts.synthetic.LESIONS``:
tumour-like, MS-like, small cortical T1-dark, T1-bright/T2-dark), 240 x 240 x 155 at 1 mm, t = 75, 100, ..., 175
(``--t_stride 25``).

The chain changes one thing at a time:

0. before: the bundle's old behaviour: its shipped demo weights of revision ``--before_rev`` (trained on the scaled
   image, [0, 1]), labels resized with the legacy ``nearest`` rule, figures on brain voxels;
1. + labels resized ``nearest-exact`` (aligned with the image);
2. + the authors' input range, 2x - 1 (``diffusion_range [-1, 1]``): retrained;
3. + the authors' voxel set (``voxel_set volume``: every slice scored, the map not masked, Yen and AUPRC on every
   voxel of the scoring grid);
4. + the authors' pyramid construction (``noise_type pyramid_authors``): retrained.

``--train_seeds K`` trains each retrained model K times (training seeds 0 .. K-1) and ``--seeds N`` scores every
model with N noise seeds (0 .. N-1); the chain tables then give each figure as mean ± SD over the K x N runs (the
'before' weights are not retrained: N runs). The per-subject guard table is that of seed 0 and training 0.

Each model is one chain of steps: its training, then its evaluations. ``--jobs J`` runs J chains side by side (each
command with ``--threads``), the newest trainings first; the report is the same whatever the order.

Every evaluation runs without the bundle's guard against segmentations that swallow the brain, so Dice_Yen is Yen's
own; the last table applies the guard (``max_segmented_fraction``) to the per-subject figures as inference does.
Results go to ``<work_dir>/faithful.md`` (``--report``: e.g. ``bundle/docs/faithful_made_data.md``); steps already
done are reused, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.bench.jobs import Step, bundle_command, cached_step, recorded_step, run_tasks, step_done
from benchmarks.bench.kept import EVALUATION_FILES
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import fmt, markdown_table, printed_by, wall_time_lines, write_report
from benchmarks.bench.settings import DATA_NOTE, Settings
from benchmarks.bench.spread import fmt_spread
from scripts.files import atomic_write_bytes
from scripts.synthetic import make_dataset

FAMILIES = ("tumour", "ms", "cortical", "bright")
FAMILY_NAMES = {
    "tumour": "tumour-like",
    "ms": "MS-like",
    "cortical": "small cortical T1-dark",
    "bright": "T1-bright / T2-dark",
}
# float32 on every machine, as the authors train and score: the figures of a run spread over sittings must not depend
# on whether the machine of a sitting has native bf16 (the steps kept before this was pinned ran in float32 on an AMD
# EPYC Zen 1, which has none; bf16 autocast would be chosen, and change the figures, on a Zen 4).
DEMO_BUDGET = {
    "autocast": False,
    "max_epochs": 6,
    "epoch_iterations": 100,
    "checkpoint_interval": 100,
}
BEFORE_SETTINGS = {
    "method": "ANDi",
    "diffusion_range": [0, 1],
    "modalities": ["t1", "t1c", "t2", "flair"],
    "image_size": 128,
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "network_preset": "cpu",
    "noise_type": "pyramid",
}


def log(text: str) -> None:
    print(text, flush=True)


def make_data(work: Path, n_test: int) -> tuple[Path, dict[str, Path]]:
    """The demo's healthy studies (same seeds as ``make-demo-data``) and the test set, one datalist per family."""
    train = make_dataset(work / "data" / "train", n_healthy=24, n_anomalous=0, n_validation=2, seed=0)
    test = make_dataset(work / "data" / "test", n_healthy=0, n_anomalous=n_test, lesion=list(FAMILIES), seed=7)
    items = json.loads(test.read_text())["testing"]
    per_family = {}
    for family in FAMILIES:
        path = test.parent / f"datalist_{family}.json"
        content = json.dumps({"testing": [i for i in items if i["name"].startswith(family + "_")]}, indent=2)
        if not path.is_file() or path.read_text() != content:
            atomic_write_bytes(content.encode(), path)
        per_family[family] = path
    return train, per_family


def before_weights(work: Path, rev: str) -> Path:
    """The shipped weights of revision ``rev``, with the settings they were trained under recorded."""
    out = work / "weights" / "before.pt"
    if not out.is_file():
        raw = work / "weights" / "before_raw.pt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_bytes(
            subprocess.run(
                ["git", "show", f"{rev}:bundle/models/model.pt"], cwd=REPO, capture_output=True, check=True
            ).stdout
        )
        cmd = [
            sys.executable,
            "-m",
            "scripts.cli",
            "record-weights",
            str(raw),
            str(out),
            "--settings",
            json.dumps(BEFORE_SETTINGS),
        ]
        subprocess.run(cmd, cwd=REPO / "bundle", check=True, capture_output=True)
    return out


def train_step(
    work: Path,
    name: str,
    datalist: Path,
    noise: str | None,
    profiles: tuple[str, ...] = (),
    seed: int = 0,
    extra: dict | None = None,
) -> tuple[Path, list[str], Path]:
    """The weights, the command and the step record of training model ``name`` at the demo budget with training
    ``seed`` (0 keeps the name); ``profiles``: config files merged after train.yaml (e.g. v2.yaml); ``noise`` None
    keeps the configs' noise; ``extra``: further overrides (e.g. ``modalities``), last."""
    out = work / "train" / (name if seed == 0 else f"{name}_seed{seed}")
    weights = out / "model.pt"
    overrides = {
        "seed": seed,
        "dataset_dir": datalist,
        "output_dir": out,
        "weights": weights,
        **({} if noise is None else {"noise_type": noise}),
        "diffusion_range": "[-1, 1]",
        **DEMO_BUDGET,
        **(extra or {}),
    }
    return weights, bundle_command("training", ["train.yaml", *profiles], overrides), out / "table_command.json"


def train(
    work: Path,
    name: str,
    datalist: Path,
    noise: str | None,
    s: Settings,
    profiles: tuple[str, ...] = (),
    seed: int = 0,
    extra: dict | None = None,
) -> tuple[Path, Step]:
    """Train model ``name`` (:func:`train_step`) unless it is done; its weights and step (wall time, resumed)."""
    weights, cmd, record = train_step(work, name, datalist, noise, profiles, seed, extra)
    kept = (weights.name,) if s.keep_weights else ()  # restored from the kept folder with its record, not retrained
    # with keep_weights, an unfinished training's newest checkpoint is kept too, and a later sitting resumes from it
    checkpoints = record.parent / "checkpoints" if s.keep_weights else None  # train.yaml's ckpt_dir
    # named by its folder (``v2``, ``v2_seed1``): each training seed keeps its own log in ``<work>/logs``
    step = cached_step(
        f"train_{record.parent.name}", cmd, record, weights.is_file, s, work, log, kept, checkpoints=checkpoints
    )
    return weights, step


def train_unless_evaluated(
    work: Path,
    name: str,
    datalist: Path,
    noise: str | None,
    s: Settings,
    runs: list[tuple[str, str, Path, dict]],
    profiles: tuple[str, ...] = (),
    seed: int = 0,
    extra: dict | None = None,
) -> Step | None:
    """Train model ``name`` (:func:`train`) unless every evaluation of its weights in ``runs`` (the arguments
    ``name, family, datalist, overrides`` of :func:`evaluate_step`) is done, in the work folder or kept: a run spread
    over sittings then needs no weights for what it has evaluated. The training's step; when it is skipped, the
    recorded one (None where no record of it is left)."""
    if runs and all(evaluation_done(work, *run, s) is not None for run in runs):
        _, cmd, record = train_step(work, name, datalist, noise, profiles, seed, extra)
        return recorded_step(f"train_{record.parent.name}", cmd, record, s, work)
    return train(work, name, datalist, noise, s, profiles, seed, extra)[1]


def evaluate_step(
    work: Path, name: str, family: str, datalist: Path, overrides: dict, profiles: tuple[str, ...] = ()
) -> tuple[Path, list[str]]:
    """The output folder and the command of evaluating run ``name`` on one family; ``profiles``: config files merged
    after evaluate.yaml (e.g. v2.yaml)."""
    out = work / "eval" / f"{name}_{family}"
    full = {
        "dataset_dir": datalist,
        "output_dir": out,
        "t_stride": 25,
        "voxel_set": "volume",
        "max_segmented_fraction": "null",
        "save_maps": False,
        "amp": False,  # float32, as DEMO_BUDGET: inference's "auto" would score in bf16 on a CPU that has it
        "report_note": f"{DATA_NOTE}: {FAMILY_NAMES[family]} test set of benchmarks/faithful.py ({name})",
        **overrides,
    }
    return out, bundle_command("evaluate", ["inference.yaml", "evaluate.yaml", *profiles], full)


def _evaluation(work: Path, name: str, family: str, datalist: Path, overrides: dict, profiles: tuple[str, ...]) -> dict:
    """The step arguments (but ``s``) of :func:`evaluate_step`'s evaluation, the same for :func:`~.jobs.step_done` and
    :func:`~.jobs.cached_step`: its name, command and record, done when its metrics.json is there, its figures kept."""
    out, cmd = evaluate_step(work, name, family, datalist, overrides, profiles)
    return {
        "name": f"eval_{name}_{family}",
        "cmd": cmd,
        "record": out / "table_command.json",
        "done": (out / "metrics.json").is_file,
        "work_dir": work,
        "log": log,
        "kept_files": EVALUATION_FILES,
    }


def evaluation_done(
    work: Path, name: str, family: str, datalist: Path, overrides: dict, s: Settings, profiles: tuple[str, ...] = ()
) -> Step | None:
    """The evaluation of :func:`evaluate_step` as recorded where it is done, in the work folder or kept
    (``s.keep_dir``, restored into the work folder); None where it is not done."""
    return step_done(**_evaluation(work, name, family, datalist, overrides, profiles), s=s)


def evaluate(
    work: Path, name: str, family: str, datalist: Path, overrides: dict, s: Settings, profiles: tuple[str, ...] = ()
) -> tuple[Path, Step]:
    """Evaluate run ``name`` on one family (:func:`evaluate_step`) unless it is done; its folder and step (wall time,
    resumed). Its figures are kept with ``s.keep_dir``."""
    step = _evaluation(work, name, family, datalist, overrides, profiles)
    return step["record"].parent, cached_step(**step, s=s)


def run_tag(name: str, training: int, seed: int) -> str:
    """The evaluation tag of one run of model ``name``: ``range``, ``range_t1`` (training 1), ``range_t1_s2`` (noise
    seed 2)."""
    return name + ("" if training == 0 else f"_t{training}") + ("" if seed == 0 else f"_s{seed}")


def metrics(out: Path, voxel_set: str, median_filter: int) -> dict:
    rows = json.loads((out / "metrics.json").read_text())["metrics"]
    return next(r for r in rows if r["voxel_set"] == voxel_set and r["median_filter"] == median_filter)


def subjects(out: Path, voxel_set: str, median_filter: int) -> list[dict]:
    with open(out / "metrics_per_subject.csv") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r["voxel_set"] == voxel_set and int(r["median_filter"]) == median_filter]


def guarded(rows: list[dict], limit: float) -> tuple[float, list[float]]:
    """Mean Dice_Yen and the share of the brain marked per subject, after inference's guard at ``limit``."""
    dices, marked = [], []
    for r in rows:
        rejected = float(r["segmented_fraction"]) > limit
        dices.append(0.0 if rejected else float(r["dice_yen"]))
        marked.append(0.0 if rejected else float(r["segmented_fraction"]))
    return float(np.mean(dices)), marked


def add_run_arguments(parser: argparse.ArgumentParser, work_dir: str) -> None:
    """The options of every benchmark that trains and evaluates on this made data: the work folder, the test set's
    size, the threads of each command, and the noise seeds and trainings of the spread."""
    parser.add_argument("--work_dir", default=work_dir)
    parser.add_argument("--n_test", type=int, default=4, help="test studies per lesion family")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="bundle commands side by side, each with --threads (faithful.py: one model's chain each; v2.py: one "
        "evaluation each)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds of every evaluation (0 .. N-1)")
    parser.add_argument("--train_seeds", type=int, default=1, help="trainings of each trained model (seeds 0 .. K-1)")
    parser.add_argument(
        "--keep_dir",
        default=None,
        help="a folder (e.g. in the repository) where the steps' records and figures are kept, so that a run spread "
        "over sittings on machines that lose --work_dir goes on where it stopped (benchmarks/bench/kept.py)",
    )
    parser.add_argument(
        "--keep_weights",
        action="store_true",
        help="with --keep_dir: keep each finished training's weights there too (4.5 MB per model), so that its "
        "evaluations can go on in a later sitting without training it again; and an unfinished training's newest "
        "checkpoint (18 MB), so that a later sitting resumes it",
    )


def run_settings(args: argparse.Namespace) -> Settings:
    """The settings of a run from the options of :func:`add_run_arguments`."""
    if args.keep_weights and not args.keep_dir:
        raise SystemExit("error: --keep_weights: give --keep_dir too (where the weights are kept)")
    return Settings(threads=args.threads, keep_dir=args.keep_dir, keep_weights=args.keep_weights)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    add_run_arguments(parser, "/tmp/andi_faithful")
    parser.add_argument("--before_rev", default="386d979", help="git revision whose shipped weights are 'before'")
    parser.add_argument("--median_filter", type=int, default=5, help="median filter of the chain table (0, 3, 5)")
    parser.add_argument("--guard", type=float, default=0.5, help="max_segmented_fraction of the last table")
    parser.add_argument("--report", default=None, help="where the report goes (default: <work_dir>/faithful.md)")
    return parser.parse_args(argv)


RETRAINED: tuple[tuple[str, str, str], ...] = (
    ("range", "range_pyramid", "pyramid"),
    ("authors_pyramid", "range_pyramid_authors", "pyramid_authors"),
)
"""The retrained runs of the chain: (run, model, training noise)."""


@dataclass(frozen=True)
class Chain:
    """One model's part of the benchmark: its training ``k`` (``model`` and ``noise``; None for the 'before' weights,
    which are not trained) and its evaluations, on every family for every noise seed, under ``overrides``."""

    run: str
    k: int
    overrides: dict
    model: str | None = None
    noise: str | None = None

    def evaluations(self, args: argparse.Namespace, tests: dict[str, Path]) -> list[tuple[str, str, Path, dict]]:
        """The arguments ``name, family, datalist, overrides`` of :func:`evaluate_step` of each evaluation."""
        return [
            (run_tag(self.run, self.k, n), family, tests[family], {**self.overrides, "seed": n})
            for n in range(args.seeds)
            for family in FAMILIES
        ]


def chains(args: argparse.Namespace, work: Path, train_list: Path, before: Path) -> list[Chain]:
    """Every model of the benchmark, the newest trainings first (in a run spread over sittings, they are the ones still
    to train: with ``--jobs 2`` a long training starts at once beside the evaluations of the others)."""
    out = [
        Chain(run, k, {"weights": train_step(work, model, train_list, noise, seed=k)[0]}, model, noise)
        for k in reversed(range(args.train_seeds))
        for run, model, noise in RETRAINED
    ]
    out += [
        Chain("before", 0, {"weights": before, "diffusion_range": "[0, 1]", "label_interpolation": "nearest"}),
        Chain("labels", 0, {"weights": before, "diffusion_range": "[0, 1]"}),
    ]
    return out


def run_chain(
    chain: Chain, args: argparse.Namespace, work: Path, train_list: Path, tests: dict[str, Path], s: Settings
) -> dict[str, Step]:
    """Train ``chain``'s model unless its evaluations are all done or kept (:func:`train_unless_evaluated`), then
    evaluate it; its steps by label (``train <model> seed <k>``, ``eval <tag> <family>``)."""
    evaluations = chain.evaluations(args, tests)
    steps: dict[str, Step] = {}
    if chain.model is not None:
        took = train_unless_evaluated(work, chain.model, train_list, chain.noise, s, evaluations, seed=chain.k)
        if took is not None:
            steps[f"train {chain.model} seed {chain.k}"] = took
    for tag, family, datalist, overrides in evaluations:
        steps[f"eval {tag} {family}"] = evaluate(work, tag, family, datalist, overrides, s)[1]
    return steps


def run_all(
    args: argparse.Namespace, work: Path, train_list: Path, tests: dict[str, Path], before: Path, s: Settings
) -> tuple[dict[tuple[str, str], list[Path]], dict[str, Step]]:
    """Every chain (:func:`chains`), ``--jobs`` at once: (run, family) -> the evaluations' output folders, one per
    training and noise seed in that order; and every step by label, in the chains' order."""
    todo = chains(args, work, train_list, before)
    done: list[dict[str, Step]] = [{} for _ in todo]

    def task(i: int) -> None:
        done[i] = run_chain(todo[i], args, work, train_list, tests, s)

    run_tasks([partial(task, i) for i in range(len(todo))], args.jobs)
    outs: dict[tuple[str, str], list[Path]] = {}
    for chain in sorted(todo, key=lambda c: c.k):  # training 0 first, as fmt_spread's runs and the guard table's [0]
        for tag, family, datalist, overrides in chain.evaluations(args, tests):
            outs.setdefault((chain.run, family), []).append(evaluate_step(work, tag, family, datalist, overrides)[0])
    return outs, {label: step for steps in done for label, step in steps.items()}


def chain_section(args: argparse.Namespace, outs: dict[tuple[str, str], list[Path]]) -> list[str]:
    """The report's title, its command and the chain table: one change at a time, at ``--median_filter``."""
    chain = [
        ("0. before: weights on [0, 1], legacy nearest labels, brain voxels", "before", "brain"),
        ("1. + labels nearest-exact", "labels", "brain"),
        ("2. + input range 2x - 1 (retrained)", "range", "brain"),
        ("3. + voxel set volume (the authors')", "range", "volume"),
        ("4. + the authors' pyramid noise (retrained)", "authors_pyramid", "volume"),
    ]
    mf = args.median_filter
    header = ["change"] + [
        f"{FAMILY_NAMES[f]} {m}" for f in FAMILIES for m in ("AUPRC", "⌈Dice⌉", "Dice_Yen", "marked")
    ]
    rows = []
    for label, run, voxels in chain:
        cells = [label]
        for family in FAMILIES:
            ms = [metrics(o, voxels, mf) for o in outs[run, family]]
            cells += [
                fmt_spread([m["auprc"] for m in ms]),
                fmt_spread([m["ceil_dice"] for m in ms]),
                fmt_spread([m["dice_yen"] for m in ms]),
                fmt_spread([100 * m["segmented_fraction_median"] for m in ms], 1) + "%",
            ]
        rows.append(cells)
    return [
        "# ANDi as published: before and after, on made (synthetic) data",
        "",
        f"{printed_by('benchmarks.faithful')}; this file is written by the script. Every figure is on **{DATA_NOTE}**, "
        f"as mean ± SD over {args.train_seeds} training(s) x {args.seeds} noise seed(s) where there is more than one "
        "run. Training: the demo's command (`cpu` preset, 600 iterations of 16 slices, float32) on the demo's 22 + 2 "
        "made healthy studies; scoring in float32.",
        f"{args.n_test} test studies per family; median filter {mf}; t = 75, 100, ..., 175 (stride 25); raw Yen (no",
        "guard). 'marked' is the median share of the brain that the Yen segmentation marks; ⌈Dice⌉ is the paper's",
        "(mean of per-subject Dice at one threshold).",
        "",
        markdown_table(header, rows),
    ]


def settings_section(outs: dict[tuple[str, str], list[Path]]) -> list[str]:
    """Every median filter, both voxel sets, both new models: the figures the default is chosen from."""
    header2 = ["model", "voxel set", "MF"] + [
        f"{FAMILY_NAMES[f]} {m}" for f in FAMILIES for m in ("AUPRC", "⌈Dice⌉", "Dice_Yen")
    ]
    rows2 = []
    for run in ("range", "authors_pyramid"):
        for voxels in ("volume", "brain"):
            for size in (0, 3, 5):
                cells = [run, voxels, str(size or "off")]
                for family in FAMILIES:
                    ms = [metrics(o, voxels, size) for o in outs[run, family]]
                    cells += [fmt_spread([m[k] for m in ms]) for k in ("auprc", "ceil_dice", "dice_yen")]
                rows2.append(cells)
    return ["", "## Every setting of the two retrained models", "", markdown_table(header2, rows2)]


def pyramid_section(args: argparse.Namespace, outs: dict[tuple[str, str], list[Path]]) -> list[str]:
    """The training noise by training: per family and training, AUPRC of the equation's pyramid (``range``) and of the
    authors' construction (``authors_pyramid``) as mean ± SD over the noise seeds, their difference paired by noise
    seed, and whether the order holds in every run of every training (voxel set ``volume``, ``--median_filter``).

    The trainings, not the noise seeds, are what a choice of training noise must outlast: ``outs`` lists each run's
    ``--seeds`` evaluations per training, training 0 first (:func:`run_all`).
    """
    n, mf = args.seeds, args.median_filter
    pair = [run for run, _, _ in RETRAINED]  # they differ only in the training noise
    header = ["family", "training", "range (the equation)", "authors_pyramid", "difference, paired by noise seed"]
    rows, verdicts = [], []
    for family in FAMILIES:
        every = {run: [metrics(o, "volume", mf)["auprc"] for o in outs[run, family]] for run in pair}
        for k in range(args.train_seeds):
            ours, theirs = (every[run][k * n : (k + 1) * n] for run in pair)
            difference = [a - b for a, b in zip(ours, theirs, strict=True)]
            rows.append([FAMILY_NAMES[family], str(k), fmt_spread(ours), fmt_spread(theirs), fmt_spread(difference)])
        ours, theirs = (every[run] for run in pair)
        if min(ours) > max(theirs):
            verdict = "the equation ahead in every run"
        elif min(theirs) > max(ours):
            verdict = "the authors' construction ahead in every run"
        else:
            verdict = "neither ahead in every run"
        verdicts.append(f"- {FAMILY_NAMES[family]}: {verdict}.")
    return [
        "",
        "## The training noise, training by training",
        "",
        f"AUPRC at median filter {mf}, voxel set volume: mean ± SD over the {n} noise seed(s) of each training.",
        "",
        markdown_table(header, rows),
        "",
        *verdicts,
    ]


def guard_section(args: argparse.Namespace, outs: dict[tuple[str, str], list[Path]]) -> list[str]:
    """The guard, on what inference writes: per family, Dice_Yen and the share of the brain marked per study."""
    header3 = [
        "model",
        "voxel set",
        "MF",
        "family",
        "lesion share of brain (median)",
        "Dice_Yen (guarded)",
        "marked per study",
    ]
    rows3 = []
    for run in ("range", "authors_pyramid"):
        for voxels in ("volume", "brain"):
            for size in (3, 5):
                for family in FAMILIES:
                    per = subjects(outs[run, family][0], voxels, size)
                    dice, marked = guarded(per, args.guard)
                    lesion = np.median([int(r["label_voxels"]) / int(r["brain_voxels"]) for r in per])
                    rows3.append(
                        [
                            run,
                            voxels,
                            str(size),
                            FAMILY_NAMES[family],
                            f"{100 * lesion:.2f}%",
                            fmt(dice),
                            ", ".join(f"{100 * v:.1f}%" for v in marked),
                        ]
                    )
    return [
        "",
        f"## What inference writes: Yen with the guard (max_segmented_fraction {args.guard})",
        "",
        "Training 0, noise seed 0: the studies of one run.",
        "",
        markdown_table(header3, rows3),
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.work_dir)
    s = run_settings(args)
    start = time.perf_counter()
    log(f"made data in {work / 'data'} ...")
    train_list, tests = make_data(work, args.n_test)
    before = before_weights(work, args.before_rev)
    outs, seconds = run_all(args, work, train_list, tests, before, s)
    text = chain_section(args, outs) + settings_section(outs) + pyramid_section(args, outs) + guard_section(args, outs)
    text += [
        "",
        *wall_time_lines(seconds, time.perf_counter() - start),
    ]
    report = write_report("\n".join(text) + "\n", Path(args.report) if args.report else work / "faithful.md")
    log("\n".join(text))
    log(f"written to {report}")


if __name__ == "__main__":
    run_benchmark(main)
