"""Shared pieces of ``benchmarks/table1.py`` and ``benchmarks/table2.py``: the paper's Tables 1 and 2 on MADE
(synthetic) data, every method trained and scored through the bundle's own workflows.

* :func:`make_data`: one healthy training set (with healthy validation studies) and, per lesion family
  (large tumour-like, many small MS-like), an anomalous test set and a small labelled validation set, all made by
  :func:`scripts.synthetic.make_dataset` in ``<work_dir>/data``.
* :func:`train`: ``python -m monai.bundle run training`` with a method's configs and the common budget (same
  iterations, batch size and data for every method); skipped when its weights exist already with the same command.
* :func:`evaluate`: ``python -m monai.bundle run evaluate`` (``evaluate.yaml`` merged last) on one test set; the
  figures are read from the ``metrics.json`` it writes; skipped when that file exists already with the same command.
* :func:`calibrate`, :func:`tune_threshold`: AutoDDPM's ``run calibrate`` and FLAIR's ``run tune_threshold``.
* the method specifications shared by both tables (so that a run of one reuses the other's work) and the Markdown
  formatting.

Every command runs from the repository root with ``OMP_NUM_THREADS`` set (``--threads``); its output goes to
``<work_dir>/logs/<step>.log``. Up to ``--jobs`` commands run side by side (:func:`run_tasks`).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bundle") not in sys.path:
    sys.path.insert(0, str(REPO / "bundle"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scripts.metrics import dice, median_filtered  # noqa: E402
from scripts.report import load_maps  # noqa: E402
from scripts.scoring import use_amp  # noqa: E402
from scripts.studies import atomic_write_bytes  # noqa: E402
from scripts.synthetic import make_dataset  # noqa: E402

DATA_NOTE = "made (synthetic) data"
# Grids of the made studies: "small" has the field of view of BraTS (as `scripts.cli make-demo-data --size small`).
GRIDS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "full": ((240, 240, 155), (1.0, 1.0, 1.0)),
    "small": ((96, 96, 62), (2.5, 2.5, 2.5)),
    "smoke": ((48, 48, 32), (5.0, 5.0, 5.0)),
}
FAMILIES: dict[str, str] = {"tumour": "tumour-like (large)", "ms": "MS-like (many small)"}
MEDIAN_FILTERS: tuple[int, ...] = (0, 3, 5)
METRICS: tuple[tuple[str, str], ...] = (("auprc", "AUPRC"), ("ceil_dice", "⌈Dice⌉"), ("dice_yen", "Dice_Yen"))
TINY_DDPM = "{'channels': [8, 16], 'attention_levels': [False, True], 'num_res_blocks': 1, 'num_head_channels': 8, 'norm_num_groups': 8}"  # noqa: E501
TINY_DAE = "{'features': [8, 8, 8, 8, 8, 8]}"
PAPER_CHAINS = {"anoddpm_t_upper": 250, "autoddpm_t_upper": 200, "autoddpm_t_inpaint": 50, "autoddpm_resamplings": 5}


class BenchmarkError(RuntimeError):
    """A bundle command failed, or the work folder holds results of other settings."""


STOP = threading.Event()  # set on Ctrl-C (run_tasks): no further bundle command starts


# ---------------------------------------------------------------------------------------------------- settings


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
    "preset": TINY_DDPM,
    "dae_preset": TINY_DAE,
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


# ---------------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    """Datalists of the made data: ``healthy`` ("training"/"validation"); per family a ``test`` set and a labelled
    ``val`` set (each a "testing" list)."""

    healthy: Path
    test: dict[str, Path]
    val: dict[str, Path]


def make_data(work_dir: Path, s: Settings, log: Callable[[str], None] = print) -> Data:
    """Make (or find, when already made) the healthy, test and labelled validation sets in ``work_dir/data``.

    Seeds: healthy and test studies from ``seed``, the labelled validation studies from ``seed + 1`` (other
    studies). A work folder made with another grid or seed is refused (the studies would be mixed).
    """
    shape, spacing = GRIDS[s.grid]
    root = work_dir / "data"
    stamp = {"grid": s.grid, "shape": shape, "spacing": spacing, "seed": s.seed}
    stamp_file = root / "made_data.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) != json.loads(json.dumps(stamp)):
        raise BenchmarkError(
            f"{root} holds made data of other settings ({stamp_file.read_text().strip()}); use another --work_dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((json.dumps(stamp) + "\n").encode(), stamp_file)
    start = time.perf_counter()
    grid = {"shape": shape, "spacing": spacing}
    data = Data(
        healthy=make_dataset(root / "healthy", s.n_train + s.n_val, 0, seed=s.seed, n_validation=s.n_val, **grid),
        test={f: make_dataset(root / f"{f}_test", 0, s.n_test, lesion=f, seed=s.seed, **grid) for f in FAMILIES},
        val={
            f: make_dataset(root / f"{f}_val", 0, s.n_val_labelled, lesion=f, seed=s.seed + 1, **grid) for f in FAMILIES
        },
    )
    log(
        f"{DATA_NOTE}: {s.n_train} healthy training + {s.n_val} healthy validation studies; per family "
        f"({', '.join(FAMILIES)}) {s.n_test} test + {s.n_val_labelled} labelled validation studies; grid {s.grid} "
        f"{shape} at {spacing[0]} mm; in {root} ({time.perf_counter() - start:.0f} s)"
    )
    return data


# ---------------------------------------------------------------------------------------------------- commands


def bundle_command(workflow: str, configs: Sequence[str], overrides: Mapping[str, object]) -> list[str]:
    """``python -m monai.bundle run WORKFLOW`` with the merged ``configs`` (under ``bundle/configs``) and
    ``--key value`` overrides (booleans as ``true``/``false``)."""
    files = str([f"bundle/configs/{c}" for c in configs])
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", files, "--bundle_root", "bundle"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return cmd


def run_command(cmd: Sequence[str], log_file: Path, s: Settings) -> str:
    """Run ``cmd`` from the repository root, its stdout and stderr into ``log_file``; returns its stdout.

    Raises:
        BenchmarkError: the command failed (with the end of its log).
    """
    if STOP.is_set():
        raise BenchmarkError("stopped (interrupted) before it started")
    env = {**os.environ, "OMP_NUM_THREADS": str(s.threads)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as err:
        err.write(shlex.join(cmd) + "\n\n")
        err.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        err.write("\n--- stdout ---\n" + proc.stdout)
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise BenchmarkError(f"command failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    return proc.stdout


def _record_key(cmd: Sequence[str]) -> list[str]:
    """The part of a command that identifies a result (not the interpreter's path)."""
    return list(cmd[1:])


@dataclass
class Step:
    """One bundle command of a table, done now or found done in the work folder."""

    name: str
    seconds: float
    reused: bool
    result: dict = field(default_factory=dict)
    resumed: bool = False  # the wall time is that of the last attempt only


def cached_step(
    name: str,
    cmd: Sequence[str],
    record: Path,
    done: Callable[[], bool],
    s: Settings,
    work_dir: Path,
    parse: Callable[[str], dict] = lambda out: {},
    log: Callable[[str], None] = print,
) -> Step:
    """Run ``cmd`` unless ``record`` says that the same command finished and ``done()`` holds; keep its wall time
    and ``parse(stdout)`` in ``record``. The record is written before the command starts, so that an interrupted
    step is run again (a training then resumes from its checkpoint) and a folder of other settings is refused.

    Raises:
        BenchmarkError: the command failed; or ``record`` belongs to a different command (other settings).
    """
    key = _record_key(cmd)
    saved = json.loads(record.read_text()) if record.is_file() else None
    if saved is not None and saved.get("command") != key:
        raise BenchmarkError(
            f"{record.parent} holds a step of other settings ({record}); use another --work_dir (or the same options)"
        )
    if saved is not None and saved.get("finished") and done():
        log(f"  {name}: reused from {record.parent} ({saved['seconds']:.0f} s when it ran)")
        return Step(name, float(saved["seconds"]), True, saved.get("result", {}), bool(saved.get("resumed")))
    resumed = saved is not None  # an earlier attempt of this command did not finish
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes((json.dumps({"command": key, "finished": False}, indent=2) + "\n").encode(), record)
    log(f"  {name}: {'resuming' if resumed else 'running'} ... (log: {work_dir / 'logs' / (name + '.log')})")
    start = time.perf_counter()
    out = run_command(cmd, work_dir / "logs" / f"{name}.log", s)
    seconds = time.perf_counter() - start
    result = parse(out)
    text = {"command": key, "finished": True, "seconds": seconds, "resumed": resumed, "result": result}
    atomic_write_bytes((json.dumps(text, indent=2) + "\n").encode(), record)
    log(f"  {name}: done in {seconds:.0f} s")
    return Step(name, seconds, False, result, resumed)


def _printed_value(stdout: str, prefix: str) -> object:
    """The Python literal printed after ``prefix`` on a line of ``stdout``."""
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return ast.literal_eval(line[len(prefix) :].strip())
    raise BenchmarkError(f"no line starting with {prefix!r} in the output")


# ---------------------------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A trainable method: its training configs (merged over nothing else) and its scoring configs (``evaluate.yaml``
    is merged after them), its network preset, and training overrides beyond the common budget."""

    name: str
    train_configs: tuple[str, ...]
    score_configs: tuple[str, ...]
    dae: bool = False
    train_overrides: tuple[tuple[str, object], ...] = ()


METHODS: dict[str, Method] = {
    "dae": Method("dae", ("train.yaml", "baselines/dae_train.yaml"), ("inference.yaml", "baselines/dae.yaml"), True),
    "anoddpm": Method(
        "anoddpm", ("train.yaml", "baselines/anoddpm_train.yaml"), ("inference.yaml", "baselines/anoddpm.yaml")
    ),
    # autoddpm_train.yaml is train.yaml with noise_type gaussian: this network is also Table 2's Gaussian-trained ANDi.
    "autoddpm": Method(
        "autoddpm", ("train.yaml", "baselines/autoddpm_train.yaml"), ("inference.yaml", "baselines/autoddpm.yaml")
    ),
    "andi": Method("andi", ("train.yaml",), ("inference.yaml",), train_overrides=(("noise_type", "pyramid"),)),
}


def preset_of(method: Method, s: Settings) -> str:
    return s.dae_preset if method.dae else s.preset


def weights_path(work_dir: Path, method: Method) -> Path:
    return work_dir / "models" / f"{method.name}.pt"


@dataclass
class Trained:
    """A trained method: its weights and budget."""

    method: Method
    weights: Path
    step: Step


def train(work_dir: Path, method: Method, s: Settings, log: Callable[[str], None] = print) -> Trained:
    """Train ``method`` with ``run training`` on the healthy set and the common budget (unless done already).

    Every method gets the same data, iterations, batch size, validation and bf16 setting; the slice cache is shared
    (``<work_dir>/cache``; the first training builds it). A killed training resumes from its checkpoint.
    """
    weights = weights_path(work_dir, method)
    overrides: dict[str, object] = {
        "dataset_dir": work_dir / "data" / "healthy" / "datalist.json",
        "output_dir": work_dir / "runs" / method.name,
        "cache_dir": work_dir / "cache",
        "final_weights": weights,
        "network_preset": preset_of(method, s),
        "image_size": s.image_size,
        "register": False,
        "batch_size": s.batch_size,
        "epoch_iterations": s.epoch_iterations,
        "max_epochs": s.max_epochs,
        "checkpoint_interval": s.epoch_iterations,
        "val_batches": s.val_batches,
        "autocast": s.autocast,
        **dict(method.train_overrides),
    }
    cmd = bundle_command("training", method.train_configs, overrides)
    step = cached_step(
        f"train_{method.name}", cmd, work_dir / "models" / f"{method.name}.json", weights.is_file, s, work_dir, log=log
    )
    return Trained(method, weights, step)


@dataclass
class Evaluation:
    """The figures of one ``run evaluate``: ``metrics[median_filter]`` is that row of ``metrics.json``."""

    name: str
    family: str
    out_dir: Path
    metrics: dict[int, dict[str, float | None]]
    step: Step


def evaluate(
    work_dir: Path,
    name: str,
    family: str,
    data: Data,
    configs: Sequence[str],
    overrides: Mapping[str, object],
    s: Settings,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """``run evaluate`` of ``configs`` + ``evaluate.yaml`` on the ``family`` test set (unless done already with the
    same command); the metrics are read from its ``metrics.json``."""
    out = work_dir / "eval" / f"{name}_{family}"
    full = {
        "dataset_dir": data.test[family],
        "output_dir": out,
        "image_size": s.image_size,
        "register": False,
        "report_note": f"{DATA_NOTE}: {FAMILIES[family]} test set of benchmarks/tables.py ({name})",
        **overrides,
    }
    cmd = bundle_command("evaluate", [*configs, "evaluate.yaml"], full)
    metrics_file = out / "metrics.json"
    step = cached_step(
        f"eval_{name}_{family}", cmd, out / "table_command.json", metrics_file.is_file, s, work_dir, log=log
    )
    rows = json.loads(metrics_file.read_text())["metrics"]
    rows = [r for r in rows if r.get("voxel_set") == rows[0].get("voxel_set")]  # the scoring's own voxel set
    return Evaluation(name, family, out, {int(r["median_filter"]): r for r in rows}, step)


def scoring_overrides(trained: Trained, s: Settings) -> dict[str, object]:
    """What every scoring of a trained method is given: its weights and its network preset."""
    return {"checkpoint": trained.weights, "network_preset": preset_of(trained.method, s)}


def andi_overrides(trained: Trained, s: Settings, aggregation: str, reduction: str, noise: str) -> dict[str, object]:
    """ANDi scoring (t in [75, 200] every ``t_stride``) with the three Table 2 switches, all given explicitly so that
    Table 1 and Table 2 build the same command for the same configuration (and reuse each other's evaluation)."""
    return {
        **scoring_overrides(trained, s),
        "t_stride": s.t_stride,
        "aggregation": aggregation,
        "channel_reduction": reduction,
        "scoring_noise": noise,
    }


def andi_name(training_noise: str, aggregation: str, reduction: str, noise: str) -> str:
    """Evaluation name of an ANDi configuration, e.g. ``andi_train-pyramid_geometric_max_gaussian``."""
    return f"andi_train-{training_noise}_{aggregation}_{reduction}_{noise}"


def anoddpm_overrides(trained: Trained, s: Settings) -> dict[str, object]:
    return {**scoring_overrides(trained, s), "t_upper": s.anoddpm_t_upper}


def autoddpm_chain(s: Settings) -> dict[str, object]:
    return {
        "t_upper": s.autoddpm_t_upper,
        "t_inpaint": s.autoddpm_t_inpaint,
        "resamplings": s.autoddpm_resamplings,
    }


def calibrate(work_dir: Path, data: Data, trained: Trained, s: Settings, log: Callable[[str], None] = print) -> Step:
    """AutoDDPM's ``run calibrate``: tau per channel from the healthy validation studies; ``result["tau"]``."""
    overrides = {
        **scoring_overrides(trained, s),
        **autoddpm_chain(s),
        "dataset_dir": data.healthy,
        "output_dir": work_dir / "eval" / "autoddpm_calibration",
        "image_size": s.image_size,
        "register": False,
        "calibration_slices": s.calibration_slices,
    }
    cmd = bundle_command("calibrate", METHODS["autoddpm"].score_configs, overrides)
    record = work_dir / "eval" / "autoddpm_calibration.json"
    return cached_step(
        "calibrate_autoddpm",
        cmd,
        record,
        lambda: True,
        s,
        work_dir,
        parse=lambda out: {"tau": list(_printed_value(out, "masking_threshold:"))},
        log=log,
    )


def tune_threshold(
    work_dir: Path, data: Data, family: str, median_filter: int, s: Settings, log: Callable[[str], None] = print
) -> Step:
    """FLAIR's ``run tune_threshold`` on the labelled validation studies of ``family``, after the median filter
    ``median_filter``; ``result`` holds ``threshold``, ``dice`` and ``studies``."""
    overrides = {
        "dataset_dir": data.val[family],
        "datalist_key": "testing",
        "output_dir": work_dir / "eval" / "flair_tuning",
        "image_size": s.image_size,
        "register": False,
        "median_filter_size": median_filter,
    }
    cmd = bundle_command("tune_threshold", ["inference.yaml", "baselines/flair.yaml"], overrides)
    record = work_dir / "eval" / "flair_tuning" / f"{family}_mf{median_filter}.json"
    return cached_step(
        f"tune_flair_{family}_mf{median_filter}",
        cmd,
        record,
        lambda: True,
        s,
        work_dir,
        parse=lambda out: dict(_printed_value(out, "best-Dice threshold (semi-supervised):")),
        log=log,
    )


def dice_at_threshold(evaluation: Evaluation, threshold: float, median_filter: int) -> float:
    """Pooled Dice over the brain voxels of an evaluation's test set (its saved maps) of ``map > threshold`` after
    the 3D median filter ``median_filter``: the segmentation FLAIR thresholding would give with a tuned threshold."""
    preds, truths = [], []
    for path in sorted((evaluation.out_dir / "maps").glob("*.npz")):
        subject = load_maps(path)
        preds.append(median_filtered(subject.a, median_filter)[subject.mask] > threshold)
        truths.append(subject.label[subject.mask])
    if not preds:
        raise BenchmarkError(f"no saved maps in {evaluation.out_dir / 'maps'}")
    return dice(np.concatenate(preds), np.concatenate(truths))


def run_tasks(tasks: Sequence[Callable[[], None]], jobs: int) -> None:
    """Run ``tasks`` (each a chain of bundle commands), up to ``jobs`` at once, taken in the given order as workers
    free up (one thread each: the work is in the subprocesses). On Ctrl-C the running commands get it too (same
    process group), and no further command starts (:data:`STOP`)."""
    if jobs <= 1 or len(tasks) <= 1:
        try:
            for task in tasks:
                task()
        except BaseException:
            STOP.set()
            raise
        return

    def guarded(task: Callable[[], None]) -> None:
        if not STOP.is_set():
            task()

    pool = ThreadPoolExecutor(min(jobs, len(tasks)))
    futures = [pool.submit(guarded, task) for task in tasks]
    try:
        for future in futures:
            future.result()
    except BaseException:
        STOP.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------------- formatting


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for the tables; ``n/a`` for a missing or non-finite one."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def mf_name(size: int) -> str:
    return "off" if size <= 1 else str(size)


def metric_header() -> list[str]:
    """Column titles of the figures: each metric for each lesion family."""
    return [f"{family} {title}" for family in FAMILIES for _, title in METRICS]


def metric_values(evaluations: Mapping[str, Evaluation], median_filter: int) -> list[float | None]:
    """The figures of one row: for each family (``evaluations[family]``), AUPRC, ceil Dice and Dice_Yen."""
    values: list[float | None] = []
    for family in FAMILIES:
        ev = evaluations.get(family)
        row = ev.metrics.get(median_filter, {}) if ev else {}
        values += [row.get(key) for key, _ in METRICS]
    return values


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def figure_rows(rows: Sequence[tuple[list[str], list[float | None], bool]], digits: int = 3) -> list[list[str]]:
    """Format rows of (label cells, figures, ranked): the best figure of each column among the ranked rows in bold."""
    width = max((len(v) for _, v, _ in rows), default=0)
    best = []
    for j in range(width):
        ranked = [v[j] for _, v, r in rows if r and v[j] is not None and math.isfinite(v[j])]
        best.append(round(max(ranked), digits) if ranked else None)
    out = []
    for labels, values, ranked in rows:
        cells = []
        for j, v in enumerate(values):
            text = fmt(v, digits)
            if ranked and best[j] is not None and text != "n/a" and round(v, digits) == best[j]:
                text = f"**{text}**"
            cells.append(text)
        out.append([*labels, *cells])
    return out


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def wall(steps: Sequence[Step]) -> str:
    """The summed wall time of ``steps``, noting those found done in the work folder or resumed."""
    if not steps:
        return "-"
    text = minutes(sum(x.seconds for x in steps))
    notes = []
    if any(x.reused for x in steps):
        notes.append("recorded by an earlier run" if all(x.reused for x in steps) else "partly by an earlier run")
    if any(x.resumed for x in steps):
        notes.append("resumed: last attempt only")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def write_report(text: str, path: str | os.PathLike) -> Path:
    """Write the report atomically (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(text.encode(), path)


def settings_lines(s: Settings) -> list[str]:
    """The data and budget settings, as Markdown list items."""
    shape, spacing = GRIDS[s.grid]
    preset = "tiny (smoke)" if s.smoke else f"`{s.preset}`"
    dae_preset = "tiny (smoke)" if s.smoke else f"`{s.dae_preset}`"
    return [
        f"- Data ({DATA_NOTE}, `scripts.synthetic.make_dataset`, seed {s.seed}): grid `{s.grid}` {shape} at "
        f"{spacing[0]} mm, axial slices resized to {s.image_size}x{s.image_size} (paper: 128); {s.n_train} healthy "
        f"training + {s.n_val} healthy validation studies; per lesion family {s.n_test} test studies "
        f"({', '.join(f'{k}: {v}' for k, v in FAMILIES.items())}).",
        f"- Training budget, the same for every trained method: {s.iterations} iterations x batch {s.batch_size} "
        f"({s.iterations * s.batch_size} slices drawn) with the bundle's recipe (`run training`), validation every "
        f"{s.epoch_iterations} iterations on {s.val_batches} batches; bf16 autocast "
        f"{'on' if s.autocast else 'off'} (the DAE runs in fp32 whatever this setting); DDPM network preset "
        f"{preset}, DAE preset {dae_preset}.",
        f"- Machine: {os.cpu_count()} CPU cores; {s.jobs} bundle command(s) side by side with {s.threads} "
        f"thread(s) each (OMP_NUM_THREADS), so each method's wall time is that of {s.threads} core(s); wall times "
        "depend on what else ran on the machine meanwhile.",
        f"- Settings as JSON: `{json.dumps(asdict(s))}`",
    ]


def table_main(
    name: str, title: str, table_cls: Callable, default_out: Path, doc: str | None, argv: list[str] | None = None
) -> int:
    """The command line of a table script: parse the arguments, run ``table_cls`` (resumably), write the report.

    Args:
        name: the script's short name in messages (``table1``).
        title: what is made (``Table 1``).
        table_cls: called as ``table_cls(work_dir, settings, log)``; has ``run()``, ``report(seconds)`` and
            ``failures``.
        default_out: the Markdown file written unless ``--out`` is given.
        doc: the script's docstring, for ``--help``.
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--out", default=str(default_out), help="Markdown file to write (atomically)")
    args = p.parse_args(argv)
    s = settings_from_args(args)
    work_dir = work_folder(args.work_dir, f"andi_{name}_")
    print(f"[{name}] {title} on {DATA_NOTE}; work folder {work_dir}", flush=True)
    start = time.perf_counter()
    table = table_cls(work_dir, s, lambda text: print(text, flush=True))
    try:
        table.run()
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; run the same command again (same --work_dir) to resume", flush=True)
        return 130
    text = table.report(time.perf_counter() - start)
    path = write_report(text, args.out)
    print("\n" + text, flush=True)
    print(f"[{name}] written to {path.resolve()}", flush=True)
    return 1 if table.failures else 0
