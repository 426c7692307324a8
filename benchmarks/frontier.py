"""Quality per second of ANDi's scoring on this CPU: AUPRC on MADE data against the seconds of a study's scoring.

    python -m benchmarks.frontier --work_dir /work/frontier   # about 75 min on 2 CPU cores for 2 networks
        [--networks demo=bundle/models/model.pt:cpu,lean=PATH:cpu_lean] [--new_default demo:window_13] [--doc]

Each row is one way of spending the work: which timesteps (a stride, a window starting at t_lower, a window ending
at t_upper, a window at a stride), how many slice-timestep pairs go into one network call, the precision (bf16
autocast, fp32, int8), ``torch.compile``, and the network (a preset with its weights, trained at the same budget).

**Maps.** Every row that only chooses timesteps reads one cache: the brain slices of each test study are scored once
per timestep t of ``range(t_lower, t_upper)`` by the bundle's configured ``ANDiInferer`` (``at_timesteps([t])``; the
noise of t does not depend on the other timesteps) and log d_t is kept per channel (float16, on disk). A subset's
geometric mean is the mean of its logs, as the inferer aggregates; then max over the channels, the 3D median filter
and AUPRC over brain voxels, per study. Rows that change the arithmetic (fp32, int8) are scored at one subset
(``--precision_stride``) to measure what they do to AUPRC; pairs per call and ``torch.compile`` change no map.

**Seconds.** Timed apart from the cache, on an otherwise quiet machine: the median over ``--repeats`` of scoring one
study's brain slices at ``--probe_timesteps`` timesteps with each speed option; seconds per study = seconds per
pair x timesteps x slices scored (all D slices of the scoring grid, as inference's default voxel set scores every
slice). ``torch.compile``'s compilation, paid once per process, is reported on its own. The rest of a study's
work (load, preprocessing, post-processing, writing) is the same in every row: ``benchmarks/study_cost.py``.

**Spread.** ``--seeds N`` scores with N noise seeds (0 .. N-1; each study its own noise, per (seed, study, t), as
inference draws it) and reports the AUPRC of the ``--spread_subsets`` rows (by default the old and new CPU defaults,
stride 5 and stride 1) as mean ± SD over the seeds, per study too, with the paired difference (and paired t-test) of
the new default against each other row; ``--spread_only`` does only that (no timing), filling caches with just those
rows' timesteps (``--doc``: into bundle/docs/frontier_spread_made_data.md). The networks are given
(``--networks``), so a spread over trainings is taken by listing several trainings of one preset there. With stride 1
among the rows, a study costs about 36 min per seed here (125 timesteps); with ``--keep_dir`` each study's figures
are kept beside the code as soon as they are made, with the weights' and studies' digests, so that a run spread over
sittings goes on at the next study, on a fresh machine too:

    python -m benchmarks.frontier --work_dir /work/frontier_spread --spread_only --seeds 3 \
        --keep_dir benchmarks/kept/frontier

The test studies are MADE (synthetic) data (``scripts.synthetic``: ``--n_test`` per lesion family, 240 x 240 x 155
at 1 mm, seed 7 as ``benchmarks/faithful.py``), and so is every AUPRC here. Results go to ``<work_dir>/frontier.md``
and ``frontier.png`` (``--doc``: into bundle/docs); the cache and the timings are kept, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks import REPO
from benchmarks.bench.frontier import log
from benchmarks.bench.frontier.cache import LogCache, cache_path
from benchmarks.bench.frontier.networks import Network, base_inferer
from benchmarks.bench.frontier.plot import plot
from benchmarks.bench.frontier.quality import MEDIAN_FILTER, Row, frontier_rows, held_out_check, subsets
from benchmarks.bench.frontier.report import goal_lines, report, thread_counts
from benchmarks.bench.frontier.spread import spread
from benchmarks.bench.frontier.studies import Study, prepare
from benchmarks.bench.frontier.timing import speed_options, timings
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import printed_by, write_report
from benchmarks.bench.settings import DATA_NOTE
from scripts.scoring import ANDiInferer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    p = benchmark_parser(__doc__)
    p.add_argument("--work_dir", type=Path, required=True)
    p.add_argument("--networks", default=f"demo={REPO / 'bundle' / 'models' / 'model.pt'}:cpu")
    p.add_argument("--n_test", type=int, default=1, help="made test studies per lesion family")
    p.add_argument(
        "--check_n",
        type=int,
        default=1,
        help="held-out studies per family (the next ones of the test set) on which the chosen rows are checked",
    )
    p.add_argument("--check_subsets", default="window_5,window_25", help="checked beside the old and new defaults")
    p.add_argument("--test_datalist", type=Path, help="a made test set already at hand (benchmarks/faithful.py's)")
    p.add_argument("--cache_only", action="store_true", help="fill the cache of log d_t and stop (no timing)")
    p.add_argument("--only", help="with --cache_only: the studies to fill (comma-separated), e.g. one per process")
    p.add_argument("--t_lower", type=int, default=75)
    p.add_argument("--t_upper", type=int, default=200)
    p.add_argument("--pairs_per_call", default="1,4,8,16,64", help="swept on the first network (bf16)")
    p.add_argument("--probe_timesteps", type=int, default=2, help="timesteps of each timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision_stride", type=int, default=25, help="subset at which fp32 and int8 are scored")
    p.add_argument("--no_compile", action="store_true", help="skip the torch.compile timing")
    p.add_argument("--old_default", default="demo:stride_10", help="the row of the old README demo")
    p.add_argument("--new_default", default="demo:window_13", help="the row of configs/cpu.yaml")
    p.add_argument(
        "--doc",
        action="store_true",
        help="copy the report and plot into bundle/docs (with --spread_only: the spread table alone)",
    )
    p.add_argument("--seeds", type=int, default=1, help="noise seeds of the spread table (0 .. N-1)")
    p.add_argument("--spread_subsets", default="window_13,stride_10,stride_5,stride_1", help="rows given with spread")
    p.add_argument("--spread_only", action="store_true", help="only the spread table (spread.md), no timing")
    p.add_argument(
        "--keep_dir",
        type=Path,
        help="keep each study's spread figures here too (e.g. benchmarks/kept/frontier; commit it), so that the "
        "spread goes on in a later sitting on a fresh machine",
    )
    return p.parse_args(argv)


def fill_caches(
    args: argparse.Namespace, studies: list[Study], networks: list[Network], base: ANDiInferer
) -> dict[str, dict[str, LogCache]]:
    """Seed 0's cache of log d_t over ``range(t_lower, t_upper)`` for every network and study (``--only``: those
    studies, with ``--cache_only``), filled where it is not yet (network -> study -> cache)."""
    timesteps = list(range(args.t_lower, args.t_upper))
    caches: dict[str, dict[str, LogCache]] = {}
    for network in networks:
        caches[network.name] = {}
        for study in studies:
            if args.cache_only and args.only and study.name not in args.only.split(","):
                continue
            shape = tuple(study.slices().shape)
            path = cache_path(args.work_dir, 0, network.name, study.name, timesteps, timesteps)
            cache = LogCache(path, timesteps, shape)
            cache.fill(base, study, network)
            caches[network.name][study.name] = cache
    return caches


def goals_and_check(
    args: argparse.Namespace, rows: list[Row], network: Network, base: ANDiInferer
) -> tuple[list[str], tuple | None]:
    """Where the new default stands against the goals, with the held-out check (``--check_n``) on ``network``."""
    goals = goal_lines(rows, args.old_default, args.new_default, f"{network.name}:stride_1")
    sets = subsets(args.t_lower, args.t_upper)
    check = held_out_check(args, args.work_dir, network, base, sets) if args.check_n else None
    if check:
        for name, scores in check[1]:
            mean = float(np.mean([v[MEDIAN_FILTER] for v in scores.values()]))
            goals.append(f"- held out ({len(check[0])} further studies): {name} AUPRC {mean:.3f} (MF {MEDIAN_FILTER})")
    for line in goals:
        log(line)
    return goals, check


def write_outputs(args: argparse.Namespace, text: str, rows: list[Row], timing: dict) -> None:
    """``frontier.md`` and ``frontier.png`` in the work folder (``--doc``: copied into bundle/docs)."""
    work = args.work_dir
    write_report(text, work / "frontier.md")
    marks = {args.old_default: "old CPU default", args.new_default: "new CPU default"}
    plot(rows, marks, work / "frontier.png", thread_counts(timing))
    log(f"wrote {work / 'frontier.md'} and {work / 'frontier.png'}")
    if args.doc:
        shutil.copyfile(work / "frontier.md", REPO / "bundle" / "docs" / "frontier_made_data.md")
        shutil.copyfile(work / "frontier.png", REPO / "bundle" / "docs" / "images" / "frontier_made_data.png")


def spread_report(section: str) -> str:
    """The spread table alone (``--spread_only``) as a report: a title and the command that printed it."""
    return (
        f"# ANDi's CPU timestep rows over noise seeds ({DATA_NOTE})\n\n"
        f"{printed_by('benchmarks.frontier')}; the rows' timing and the rest of the frontier are in "
        "[frontier_made_data.md](frontier_made_data.md).\n\n" + section
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["ANDI_PROGRESS"] = "0"  # the inferer's bar per timestep would bury the log
    work = args.work_dir
    torch.manual_seed(0)
    studies = prepare(work, args.test_datalist, 0, args.n_test, args.n_test + args.check_n)
    networks = [Network.parse(s).load() for s in args.networks.split(",")]
    base = base_inferer()
    log(f"{len(studies)} made studies; {args.t_upper - args.t_lower} timesteps; networks {[n.name for n in networks]}")
    if args.spread_only:
        text = spread_report(spread(args, work, studies, networks, {}))
        write_report(text, work / "spread.md")
        log(text)
        if args.doc:
            shutil.copyfile(work / "spread.md", REPO / "bundle" / "docs" / "frontier_spread_made_data.md")
        return

    caches = fill_caches(args, studies, networks, base)
    if args.cache_only:
        return
    options = speed_options(args, networks, base)
    timing = timings(args, work, networks, options, studies[0], base)
    rows = frontier_rows(args, work, studies, networks, caches, timing, options, base)
    goals, check = goals_and_check(args, rows, networks[0], base)
    text = report(rows, studies, networks, timing, args, goals, check)
    if args.seeds > 1:
        text += "\n" + spread(args, work, studies, networks, caches)
    write_outputs(args, text, rows, timing)
    by = {r.name: r for r in rows}
    new, old = by[args.new_default], by[args.old_default]
    print(
        f"new_default={args.new_default} auprc={new.mean(MEDIAN_FILTER):.4f} seconds={new.seconds:.1f} "
        f"old_default={args.old_default} auprc={old.mean(MEDIAN_FILTER):.4f} seconds={old.seconds:.1f} "
        f"stride_1 auprc={by[networks[0].name + ':stride_1'].mean(MEDIAN_FILTER):.4f}"
    )


if __name__ == "__main__":
    run_benchmark(main)
