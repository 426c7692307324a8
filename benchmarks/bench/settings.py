"""The settings both tables depend on (made data, common training budget, scoring options) and their command line."""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from scripts.scoring import use_amp

DATA_NOTE = "made (synthetic) data"
# Grids of the made studies: "small" has the field of view of BraTS (as `scripts.cli make-demo-data --size small`).
GRIDS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "full": ((240, 240, 155), (1.0, 1.0, 1.0)),
    "small": ((96, 96, 62), (2.5, 2.5, 2.5)),
    "smoke": ((48, 48, 32), (5.0, 5.0, 5.0)),
}
FAMILIES: dict[str, str] = {"tumour": "tumour-like (large)", "ms": "MS-like (many small)"}
MEDIAN_FILTERS: tuple[int, ...] = (0, 3, 5)
PAPER_CHAINS = {"anoddpm_t_upper": 250, "autoddpm_t_upper": 200, "autoddpm_t_inpaint": 50, "autoddpm_resamplings": 5}


@dataclass(frozen=True)
class Settings:
    """Everything both tables depend on: the made data, the common training budget and the scoring options.

    ``preset``/``dae_preset`` are passed verbatim as ``--network_preset`` (a preset name or a dict literal).
    """

    grid: str = "small"
    image_size: int = 64
    n_train: int = 10
    n_val: int = 2
    n_test: int = 3
    n_val_labelled: int = 2
    seed: int = 0
    iterations: int = 400
    epoch_iterations: int = 100
    batch_size: int = 16
    val_batches: int = 4
    preset: str = "cpu"
    dae_preset: str = "cpu"
    autocast: bool = False
    t_stride: int = 5
    anoddpm_t_upper: int = 75
    autoddpm_t_upper: int = 100
    autoddpm_t_inpaint: int = 20
    autoddpm_resamplings: int = 2
    calibration_slices: int = 8
    jobs: int = 2
    threads: int = 1
    smoke: bool = False
    # Where the steps' small outputs are kept for a run spread over sittings on machines that lose the work folder
    # (:mod:`benchmarks.bench.kept`); None: nothing kept.
    keep_dir: str | None = None
    # With keep_dir: each finished training's weights are kept there too (4.5 MB at the demo budget), so that its
    # evaluations can run in a later sitting; worth committing only while some of them are still to run.
    keep_weights: bool = False

    @property
    def max_epochs(self) -> int:
        return self.iterations // self.epoch_iterations

    def shortened(self) -> list[str]:
        """The reverse chains shortened from the paper's Appendix A values, as readable phrases."""
        names = {
            "anoddpm_t_upper": "AnoDDPM t_upper",
            "autoddpm_t_upper": "AutoDDPM t_upper",
            "autoddpm_t_inpaint": "AutoDDPM t_inpaint",
            "autoddpm_resamplings": "AutoDDPM resamplings",
        }
        return [f"{names[k]} {getattr(self, k)} (paper {v})" for k, v in PAPER_CHAINS.items() if getattr(self, k) != v]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options both tables share (defaults: :class:`Settings`)."""
    d = Settings()
    a = parser.add_argument
    a("--work_dir", default="", help="work folder (data, weights, evaluations, logs); reused to resume (default: temp)")
    a("--grid", default=d.grid, choices=sorted(GRIDS), help="grid of the made studies (small: 96x96x62, 2.5 mm)")
    a("--image_size", type=int, default=d.image_size, help="axial slices resized to this size (paper: 128)")
    a("--n_train", type=int, default=d.n_train, help="healthy training studies")
    a("--n_val", type=int, default=d.n_val, help="healthy validation studies (validation loss, AutoDDPM's tau)")
    a("--n_test", type=int, default=d.n_test, help="anomalous test studies per lesion family")
    a("--n_val_labelled", type=int, default=d.n_val_labelled, help="labelled validation studies per family (FLAIR)")
    a("--seed", type=int, default=d.seed, help="seed of the made data")
    a("--iterations", type=int, default=d.iterations, help="training iterations, the same for every method")
    a("--epoch_iterations", type=int, default=d.epoch_iterations, help="iterations between validations/checkpoints")
    a("--batch_size", type=int, default=d.batch_size, help="training batch size, the same for every method")
    a("--val_batches", type=int, default=d.val_batches, help="validation batches per epoch")
    a("--preset", default=d.preset, help="DDPM network preset (ANDi, AnoDDPM, AutoDDPM)")
    a("--dae_preset", default=d.dae_preset, help="DAE network preset")
    a(
        "--autocast",
        default="auto",
        choices=["auto", "true", "false"],
        help="bf16 autocast in training (auto: where bf16 is native: CUDA, AVX512-BF16/AMX CPUs)",
    )
    a("--t_stride", type=int, default=d.t_stride, help="ANDi: every t_stride-th t of [75, 200] (paper: 1)")
    a("--anoddpm_t_upper", type=int, default=d.anoddpm_t_upper, help="AnoDDPM noise level (paper: 250)")
    a("--autoddpm_t_upper", type=int, default=d.autoddpm_t_upper, help="AutoDDPM mask noise level (paper: 200)")
    a("--autoddpm_t_inpaint", type=int, default=d.autoddpm_t_inpaint, help="AutoDDPM re-sampling steps (paper: 50)")
    a("--autoddpm_resamplings", type=int, default=d.autoddpm_resamplings, help="AutoDDPM resamplings (paper: 5)")
    a("--calibration_slices", type=int, default=d.calibration_slices, help="AutoDDPM tau: slices per healthy study")
    a(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="bundle commands run side by side (independent methods / evaluations), one CPU core each by default",
    )
    a(
        "--threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS of each bundle command (0: CPU cores / jobs)",
    )
    a(
        "--smoke",
        action="store_true",
        help="absurdly small check of the whole chain (48x48x32 at 5 mm, 32x32 slices, tiny networks, 3 iterations, "
        "2 healthy + 1 study per family, t_stride 100, chains of a few steps): a few minutes; the figures mean nothing",
    )


SMOKE = {
    "grid": "smoke",
    "image_size": 32,
    "n_train": 1,
    "n_val": 1,
    "n_test": 1,
    "n_val_labelled": 1,
    "iterations": 3,
    "epoch_iterations": 3,
    "batch_size": 4,
    "val_batches": 1,
    "preset": "tiny",  # scripts.networks.TINY_NETWORK
    "dae_preset": "tiny",  # scripts.baselines.dae.DAE_PRESETS["tiny"]
    "autocast": False,
    "t_stride": 100,
    "anoddpm_t_upper": 8,
    "autoddpm_t_upper": 8,
    "autoddpm_t_inpaint": 3,
    "autoddpm_resamplings": 1,
    "calibration_slices": 2,
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """:class:`Settings` from the parsed options; ``--smoke`` replaces the sizes by :data:`SMOKE`."""
    names = [f for f in Settings.__dataclass_fields__ if f not in ("autocast", "smoke", "jobs", "threads")]
    jobs = max(1, args.jobs)
    threads = args.threads if args.threads > 0 else max(1, (os.cpu_count() or 1) // jobs)
    s = Settings(
        **{n: getattr(args, n) for n in names},
        autocast=use_amp(args.autocast, torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        jobs=jobs,
        threads=threads,
        smoke=bool(args.smoke),
    )
    if s.smoke:
        s = replace(s, **SMOKE)
    if s.iterations < 1 or s.epoch_iterations < 1 or s.iterations % s.epoch_iterations:
        raise SystemExit(f"--iterations ({s.iterations}) must be a positive multiple of --epoch_iterations")
    if s.n_train < 1 or s.n_val < 1 or s.n_test < 1 or s.n_val_labelled < 1:
        raise SystemExit("--n_train, --n_val, --n_test and --n_val_labelled must each be at least 1")
    return s


def work_folder(work_dir: str, prefix: str) -> Path:
    """The work folder: ``work_dir`` (made if needed), or a new temporary folder."""
    path = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=prefix))
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
