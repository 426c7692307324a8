"""Which lesions a model of fewer sequences can see, on MADE (synthetic) data: one model per modality set.

    python -m benchmarks.modality_sets --work_dir /work/modality_sets --keep_dir benchmarks/kept/modality_sets

About 5 hours on 2 CPU cores without bf16 (an AMD EPYC of 2017): a training takes 67 to 74 min (4,033 to 4,423 s,
measured 2026-12-06), an evaluation of 4 studies about 6 min. Where a sitting is shorter, give ``--sets`` one model
at a time (``--sets t1_t2=t1,t2``, then ``flair=flair``, then ``four=t1,t1c,t2,flair``) with ``--keep_dir``: each
sitting keeps its evaluations' figures in that folder (commit it; give the same ``--work_dir`` and options
each time, since a kept step is matched by its command), and the last run, with the default ``--sets``,
finds every evaluation kept, trains nothing and writes the report.

Every model is trained with the bundle's own ``run training`` at the demo budget (``cpu`` preset, 600 iterations of
16 slices) on the made healthy studies of ``benchmarks/faithful.py`` (the demo's 22 + 2), with ``--modalities`` set to
its sequences and nothing else changed; every figure comes from ``run evaluate`` on faithful.py's made test set:
``--n_test`` studies per lesion family, 240 x 240 x 155 at 1 mm, t = 75, 100, ..., 175 (``--t_stride 25``), without
the guard, at the default profile's voxel set and median filter (``--voxel_set``, ``--median_filter``).

``--sets`` names the models, ``name=seq,seq;...``: by default T1 + T2 (what most public healthy cohorts have,
IXI's T1 and T2 among them), FLAIR alone and the four BraTS sequences (the bundle's default), trained in that order.
The set of the configs' default ``modalities`` is trained and evaluated exactly as faithful.py's ``range_pyramid``:
the same steps, so that in one work folder either script reuses what the other made (v2.py's default as well).
Training and scoring run in float32 on every machine (faithful.py's ``DEMO_BUDGET``).

The report gives, per set and lesion family, AUPRC and its lift over a blind map (AUPRC / the lesion's prevalence,
which is the AUPRC of a map that cannot tell lesion from brain). A set "sees" a family when the lift reaches
``--seen_lift``; a second table gives, per family, each set's AUPRC as a fraction of the best set's. Beside them,
the made lesions' contrast per sequence (``scripts.synthetic.LESION_CONTRAST``) says which sequence carries each
family. ``--train_seeds K`` trains each model K times and ``--seeds N`` scores each with N noise
seeds: figures are mean ± SD over the K x N runs. Steps already done are reused, a stopped training resumes from
its last checkpoint, and with ``--keep_dir`` a model whose evaluations are all kept is not trained again
(``benchmarks/bench/kept.py``), so the run can be spread over several sittings, on machines that lose the work
folder too. The report goes to
``<work_dir>/modality_sets.md`` (``--doc``: also ``bundle/docs/modality_sets_made_data.md``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import REPO
from benchmarks.bench.configs import parsed
from benchmarks.bench.jobs import Step
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import markdown_table, wall_time_lines, write_report
from benchmarks.bench.settings import DATA_NOTE
from benchmarks.bench.spread import fmt_spread, mean_sd
from benchmarks.faithful import (
    DEMO_BUDGET,
    FAMILIES,
    FAMILY_NAMES,
    add_run_arguments,
    evaluate,
    log,
    make_data,
    metrics,
    run_settings,
    run_tag,
    train_step,
    train_unless_evaluated,
)
from scripts.synthetic import LESION_CONTRAST, TISSUE_MEANS, TUMOUR_LABELS

DEFAULT_SETS = "t1_t2=t1,t2;flair=flair;four=t1,t1c,t2,flair"
COMPARTMENTS: dict[str, tuple[str, ...]] = {  # lesion family -> its compartments in LESION_CONTRAST
    "tumour": tuple(TUMOUR_LABELS),
    "ms": ("ms",),
    "cortical": ("cortical",),
    "bright": ("bright",),
}
CONTRAST_ORDER = ("t1", "t1c", "t2", "flair")  # the order of LESION_CONTRAST's tuples


def parse_sets(text: str) -> dict[str, list[str]]:
    """``"four=t1,t1c,t2,flair;t1_t2=t1,t2"`` -> {"four": ["t1", "t1c", "t2", "flair"], "t1_t2": ["t1", "t2"]}."""
    sets = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, seqs = part.partition("=")
        if not name or not seqs:
            raise SystemExit(f"error: --sets: {part!r} is not name=seq,seq")
        sets[name.strip()] = [s.strip() for s in seqs.split(",") if s.strip()]
    return sets


def contrast_section() -> list[str]:
    """The made lesions' intensity per sequence, as a multiple of white matter's, beside grey matter's and CSF's."""
    header = ["lesion family (compartment)", *CONTRAST_ORDER]
    rows = []
    for tissue, index in (("grey matter", 1), ("CSF", 0)):
        cells = [f"{TISSUE_MEANS[m][index] / TISSUE_MEANS[m][2]:.2f}" for m in CONTRAST_ORDER]
        rows.append([f"*{tissue} (healthy)*", *cells])
    for family, parts in COMPARTMENTS.items():
        for part in parts:
            label = FAMILY_NAMES[family] + ("" if parts == (family,) else f" ({part})")
            rows.append([label, *(f"{v:.2f}" for v in LESION_CONTRAST[part])])
    return [
        "## The made lesions, per sequence",
        "",
        "Intensity as a multiple of the study's white matter (`scripts.synthetic.LESION_CONTRAST`, `TISSUE_MEANS`); a "
        "lesion stands out in a sequence where its figure is far from those of the tissues around it (1.00 for white "
        "matter).",
        "",
        markdown_table(header, rows),
    ]


def relative_section(
    args: argparse.Namespace, sets: dict[str, list[str]], outs: dict[tuple[str, str], list[Path]]
) -> list[str]:
    """Per family, each set's mean AUPRC as a fraction of the best set's: which sequences carry the family."""
    voxels, mf = args.voxel_set, args.median_filter
    rows = []
    for family in FAMILIES:
        auprc = {name: mean_sd([metrics(o, voxels, mf)["auprc"] for o in outs[name, family]])[0] for name in sets}
        best = max(auprc, key=auprc.get)
        rows.append([FAMILY_NAMES[family], best, *(f"{auprc[name] / auprc[best]:.2f}" for name in sets)])
    return [
        "## Each set beside the best one",
        "",
        "Per family, each set's mean AUPRC divided by that of the set with the highest (1.00). The lift above says "
        "whether a set sees a family at all; this says how much of what the best set finds it finds.",
        "",
        markdown_table(["family", "best set", *sets], rows),
    ]


def results_section(
    args: argparse.Namespace, sets: dict[str, list[str]], outs: dict[tuple[str, str], list[Path]]
) -> list[str]:
    """AUPRC (mean ± SD over runs), its lift over a blind map, ⌈Dice⌉ and Dice_Yen per set and family."""
    voxels, mf = args.voxel_set, args.median_filter
    header = ["model (sequences)"]
    for family in FAMILIES:
        header += [f"{FAMILY_NAMES[family]} AUPRC", "lift", "⌈Dice⌉"]
    header.append("sees")
    rows = []
    for name, seqs in sets.items():
        cells, seen = [f"{name} ({', '.join(seqs)})"], []
        for family in FAMILIES:
            ms = [metrics(o, voxels, mf) for o in outs[name, family]]
            lift, _ = mean_sd([m["auprc"] / m["prevalence"] for m in ms])
            cells += [fmt_spread([m["auprc"] for m in ms]), f"{lift:.1f}", fmt_spread([m["ceil_dice"] for m in ms])]
            if lift >= args.seen_lift:
                seen.append(FAMILY_NAMES[family])
        rows.append([*cells, ", ".join(seen) or "none"])
    first = next(iter(sets))
    prevalence = {f: np.mean([metrics(o, voxels, mf)["prevalence"] for o in outs[first, f]]) for f in FAMILIES}
    return [
        "## AUPRC per lesion family",
        "",
        f"Voxel set `{voxels}`, median filter {mf or 'off'}; mean ± SD over {args.train_seeds} training(s) x "
        f"{args.seeds} noise seed(s) where there is more than one run. 'lift' is AUPRC / prevalence (1 for a map "
        f"blind to the lesion); a set 'sees' a family at a lift of {args.seen_lift:g} or more. Prevalence: "
        + ", ".join(f"{FAMILY_NAMES[f]} {100 * p:.2f}%" for f, p in prevalence.items())
        + ".",
        "",
        markdown_table(header, rows),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = benchmark_parser(__doc__)
    add_run_arguments(parser, "/tmp/andi_modality_sets")
    parser.add_argument("--sets", default=DEFAULT_SETS, help="models as name=seq,seq;... (in the channels' order)")
    parser.add_argument("--voxel_set", default="volume", help="the voxel set of the table (inference.yaml's default)")
    parser.add_argument("--median_filter", type=int, default=5, help="the median filter of the table (0, 3, 5)")
    parser.add_argument("--seen_lift", type=float, default=5.0, help="the lift at which a set 'sees' a family")
    parser.add_argument("--doc", action="store_true", help="also write bundle/docs/modality_sets_made_data.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sets = parse_sets(args.sets)
    work = Path(args.work_dir)
    s = run_settings(args)
    autocast = DEMO_BUDGET["autocast"]
    start = time.perf_counter()
    log(f"made data in {work / 'data'} ...")
    train_list, tests = make_data(work, args.n_test)
    seconds: dict[str, Step] = {}
    outs: dict[tuple[str, str], list[Path]] = {}
    default = list(parsed("modalities", ["inference.yaml"]))
    for name, seqs in sets.items():  # each model's evaluations follow its training, so figures come as they can
        # the default set is trained and evaluated as faithful.py's range_pyramid: the same steps, shared in one folder
        shared = list(seqs) == default
        extra = {} if shared else {"modalities": "[" + ",".join(f"'{m}'" for m in seqs) + "]"}
        model, noise = ("range_pyramid", "pyramid") if shared else (name, None)
        for k in range(args.train_seeds):
            weights = train_step(work, model, train_list, noise, seed=k, extra=extra)[0]
            runs = []
            for n in range(args.seeds):
                for family in FAMILIES:
                    overrides: dict[str, object] = {"weights": weights, **extra, "seed": n}
                    if not shared:
                        note = f"{DATA_NOTE}: {FAMILY_NAMES[family]} test set of benchmarks/modality_sets.py ({name})"
                        overrides["report_note"] = note
                    runs.append((run_tag("range" if shared else name, k, n), family, tests[family], overrides))
            took = train_unless_evaluated(work, model, train_list, noise, s, runs, seed=k, extra=extra)
            if took is not None:
                seconds[f"train {name} seed {k}"] = took
            for tag, family, datalist, overrides in runs:
                out, seconds[f"eval {tag} {family}"] = evaluate(work, tag, family, datalist, overrides, s)
                outs.setdefault((name, family), []).append(out)
    text = [
        "# Modality sets: which lesions each set of sequences can see, on made (synthetic) data",
        "",
        f"`python -m benchmarks.modality_sets --work_dir {work} --seeds {args.seeds} --train_seeds {args.train_seeds}`"
        f"; every figure on **{DATA_NOTE}**. Each model: `run training` at the demo budget (`cpu` preset, 600 "
        f"iterations of 16 slices, bf16 autocast {'on' if autocast else 'off'}) on the 22 + 2 made healthy studies of "
        f"benchmarks/faithful.py, `--modalities` its sequences; `run evaluate` on {args.n_test} made test studies per "
        "family, t = 75, 100, ..., 175 (stride 25), raw Yen (no guard).",
        "",
        *results_section(args, sets, outs),
        "",
        *relative_section(args, sets, outs),
        "",
        *contrast_section(),
        "",
        *wall_time_lines(seconds, time.perf_counter() - start),
    ]
    report = write_report("\n".join(text) + "\n", work / "modality_sets.md")
    if args.doc:
        write_report("\n".join(text) + "\n", REPO / "bundle" / "docs" / "modality_sets_made_data.md")
    log("\n".join(text))
    log(f"written to {report}")


if __name__ == "__main__":
    run_benchmark(main)
