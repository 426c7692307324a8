"""Benchmark: time to register one raw 4-modality study to the SRI24 atlas, and how well its brain mask lands.

Usage (from the repository root)::

    python -m benchmarks.registration_speed [STUDY_FOLDER] [--runs N] [--threads T]

STUDY_FOLDER defaults to ../shared/data/cases/lgg_native (relative to the repository root): four modalities on
different grids with skull, plus a brain mask (``bet_t1c_mask``) on the t1c grid. Prints the seconds per study of
every run, their median, and the Dice between the registered brain mask and the atlas brain (atlas > 0) on the atlas
grid. Stage settings can be overridden to explore the time/accuracy trade-off.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from benchmarks import REPO
from benchmarks.bench.main import benchmark_parser, run_benchmark
from scripts.atlas import load_atlas
from scripts.registration import register_study
from scripts.registration_stages import RegistrationSettings, StageSettings
from scripts.studies import find_study_files


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _stage(base: StageSettings, args: argparse.Namespace, prefix: str) -> StageSettings:
    """``base`` with the command line's overrides for one stage (``rigid`` or ``affine``)."""
    changes = {
        name: getattr(args, f"{prefix}_{name}")
        for name in ("shrink_factors", "smoothing_sigmas", "iterations", "sampling")
        if getattr(args, f"{prefix}_{name}") is not None
    }
    return StageSettings(**{**base.__dict__, **changes})


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays."""
    return float(2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("study", nargs="?", default=str(REPO.parent / "shared" / "data" / "cases" / "lgg_native"))
    parser.add_argument("--runs", type=int, default=3, help="number of timed registrations (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="SimpleITK threads (0: SimpleITK's default)")
    for prefix in ("rigid", "affine"):
        parser.add_argument(f"--{prefix}-shrink-factors", type=_ints, default=None, help="e.g. 4,2,1")
        parser.add_argument(f"--{prefix}-smoothing-sigmas", type=_floats, default=None, help="mm, e.g. 2,1,0")
        parser.add_argument(f"--{prefix}-iterations", type=int, default=None)
        parser.add_argument(f"--{prefix}-sampling", type=float, default=None, help="fraction of voxels, e.g. 0.05")
    args = parser.parse_args()
    if args.threads > 0:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    files = find_study_files(args.study)
    paths = {key: files[key] for key in ("t1", "t1c", "t2", "flair")}
    mask = files.get("mask")
    base = RegistrationSettings()
    settings = RegistrationSettings(rigid=_stage(base.rigid, args, "rigid"), affine=_stage(base.affine, args, "affine"))
    print(f"study: {args.study} (mask: {Path(mask).name if mask else 'none'})")
    print(f"settings: {settings}")
    print(f"SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")

    atlas_brain = sitk.GetArrayViewFromImage(load_atlas()) > 0  # read once, outside the timing
    seconds, dices = [], []
    for run in range(args.runs):
        start = time.perf_counter()
        result = register_study(paths, reference="t1", mask=mask, settings=settings)
        seconds.append(time.perf_counter() - start)
        if result.mask is not None:
            dices.append(dice(sitk.GetArrayViewFromImage(result.mask) > 0, atlas_brain))
        shown = f"{dices[-1]:.4f}" if dices else "n/a (no mask)"
        print(f"run {run + 1}/{args.runs}: {seconds[-1]:.1f} s, mask Dice {shown}")
    print(f"seconds per 4-modality study (median of {args.runs}): {statistics.median(seconds):.1f}")
    if dices:
        print(f"mask Dice with atlas brain: median {statistics.median(dices):.4f}, min {min(dices):.4f}")


if __name__ == "__main__":
    run_benchmark(main)
