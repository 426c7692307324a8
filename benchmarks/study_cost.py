"""Whole-study cost: seconds and peak memory of each stage, and of the whole process, for one BraTS-sized study; and
what stays allocated, step by step and study by study, in a batch of studies with and without a calibration.

    python -m benchmarks.study_cost [--work_dir /tmp/andi_study_cost] [--t_stride 25] [--batch 8] [--skip_before]
        [--heap_only]
        [--python RUNTIME_VENV/bin/python]

The study is MADE (synthetic) data: one tumour-like study of 240 x 240 x 155 voxels at 1 mm (``scripts.synthetic``),
on the atlas lattice. Two measurements, with the shipped demo weights and the inference config's defaults:

1. **stages**, in this process: the configured preprocessing's named steps, the inferer, and the post-processing's
   named steps, run one after another on the study as ``run inference`` runs them, each timed, with the memory it
   needed: the process's peak resident size while it ran (Linux ``VmHWM``, reset before each step through
   ``clear_refs``) less its resident size before it;
2. **whole process**: ``run inference`` on the study under ``/usr/bin/time -v`` (wall seconds, maximum resident set
   size).

Both "before" (the bundle's earlier pipeline: Resized's own whole-volume anti-aliasing and MONAI's
``MedianSmoothd``, radius 2, as the median filter of size 5; :data:`BEFORE`) and "after" (``pre#antialias`` in pieces
and ``scipy.ndimage.median_filter``).

Then, for one study and for a batch of ``--batch`` studies (8 by default), each without and with a calibration that
fits (``run calibrate`` on two made healthy studies with the same weights and settings: the z-map, calibrated
scores):

3. **what stays allocated**, in this process: ``run inference``'s own objects (the batch of the config, its
   evaluator, preprocessing and post-processing) run the studies as ``run inference`` does, and after each named
   step of each study the process's resident size less its size before the first study is recorded, with the
   step's peak over the same base. A step whose "held after" rises from study to study keeps something per study;
4. **whole process**: ``run inference`` on the one study and on the batch under ``/usr/bin/time -v``.

The whole-process runs use ``--python``: give the interpreter of a venv made as a user who scores studies makes it
(``pip install torch==2.13.0 && pip install -e .``, no extras), since the test and demo extras bring scikit-learn and
pandas, which MONAI imports whenever they are installed. The in-process sections use this interpreter.
Memory is in MB of 2^20 bytes (MiB). The last lines read
``peak_before_mb=<a> peak_after_mb=<b> seconds_before=<c> seconds_after=<d>`` and
``peak_mb_1=<a> peak_mb_1_calibrated=<b> peak_mb_<n>=<c> peak_mb_<n>_calibrated=<d> floor_mb=<e>``, the last being the
whole process on a tiny made study (:func:`process_floor`).
"""

from __future__ import annotations

import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks import REPO
from benchmarks.bench.configs import config_files, config_parser
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import markdown_table
from benchmarks.bench.settings import DATA_NOTE
from scripts.synthetic import make_dataset

BEFORE: dict[str, object] = {
    "post#median_filter": {"_target_": "MedianSmoothd", "keys": "pred", "radius": 2},
    "pre#antialias": {"_target_": "Identityd", "keys": "image"},
    "pre#resize#anti_aliasing": [True, False],
}
"""The bundle's earlier pipeline: MONAI's MedianSmoothd (radius 2: size 5) and Resized's own
whole-volume anti-aliasing."""


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed(rows: list[list[str]], stage: str, fn):
    reset_peak()
    before = rss_mb("VmRSS")
    start = time.perf_counter()
    out = fn()
    rows.append([stage, f"{time.perf_counter() - start:.2f}", f"{rss_mb('VmHWM') - before:.0f}"])
    return out


def stages(study: dict[str, str], out_dir: Path, t_stride: int, overrides: dict[str, object]) -> list[list[str]]:
    """[step, seconds, the memory it needed (MB: the process's peak while it ran less its size before)], in order."""
    p = config_parser(["inference.yaml"], output_dir=str(out_dir), t_stride=t_stride, **overrides)
    pre, post = p.get_parsed_content("pre"), p.get_parsed_content("post")
    order_pre = [re.split("#|::", str(r))[-1] for r in p["preprocessing"]["transforms"]]
    order_post = list(p.get_parsed_content("post_steps"))
    network = p.get_parsed_content("network")
    inferer = p.get_parsed_content("inferer")
    rows: list[list[str]] = []
    data = dict(study)
    for name in order_pre:
        data = timed(rows, f"pre#{name}", lambda step=pre[name], d=data: step(d))
    with torch.inference_mode():
        data["pred"] = timed(rows, "score (inferer)", lambda: inferer(data["image"][None], network)[0])
    for name in order_post:
        data = timed(rows, f"post#{name}", lambda step=post[name], d=data: step(d))
    return rows


PYTHON = [sys.executable]
"""The interpreter of the whole-process runs (``--python``): by default this one."""


def whole_process(
    datalist: Path,
    out_dir: Path,
    t_stride: int,
    extra: Path | None,
    workflow: str = "inference",
    configs: Sequence[str] = ("inference.yaml",),
    options: Sequence[str] = (),
) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of ``run <workflow>`` (inference) on the datalist, from ``/usr/bin/time -v``
    with the interpreter :data:`PYTHON`; ``options`` are further command-line overrides."""
    config_list = config_files(configs)
    if extra is not None:
        config_list.append(str(extra))
    cmd = ["/usr/bin/time", "-v", PYTHON[0], "-m", "monai.bundle", "run", workflow, "--config_file",
           str(config_list), "--bundle_root", "bundle", "--dataset_dir", str(datalist), "--output_dir", str(out_dir),
           "--t_stride", str(t_stride), "--overwrite", "true", *options]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "ANDI_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"run {workflow} failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    return seconds, peak_kb / 1024


def environment(python: str) -> str:
    """Which of the packages MONAI imports when present (and the bundle itself does not need) ``python`` has."""
    code = "import importlib.util as u; print(*[m for m in ('sklearn', 'pandas', 'nilearn') if u.find_spec(m)])"
    found = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return "with " + ", ".join(found) if found else "without scikit-learn, pandas and nilearn"


def traced(transform: object, name: str, log: dict, study: list[int], base: list[float]) -> None:
    """Make ``transform`` (a step, or the inferer) record, after each call, the process's resident MB over ``base`` and
    its peak during the call over ``base``, in ``log[(study, name)]``. In place: its class becomes a subclass of the
    same name whose call is traced, so that it stays what it was for MONAI (a MapTransform that ``Invertd`` can
    invert)."""
    cls = type(transform)

    def __call__(self, *args, **kwargs):
        reset_peak()
        out = cls.__call__(self, *args, **kwargs)
        log[(study[0], name)] = (rss_mb("VmRSS") - base[0], rss_mb("VmHWM") - base[0])
        return out

    transform.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})


def held_per_step(datalist: Path, out_dir: Path, t_stride: int, calibration: Path | None) -> tuple[list, list]:
    """Run the studies of ``datalist`` with ``run inference``'s own objects in this process (``calibration``: the
    calibration file, or None for none). Returns the step names, and per study ``(name, {step: (held MB, peak MB)},
    MB held after the study)``, MB over the process's resident size before the first study."""
    overrides: dict[str, object] = {"dataset_dir": str(datalist), "output_dir": str(out_dir), "t_stride": t_stride}
    overrides["overwrite"] = True
    overrides["calibration_file"] = str(calibration or out_dir / "no_calibration.json")
    p = config_parser(["inference.yaml"], **overrides)
    p.get_parsed_content("heap_rule")  # as `run inference`'s second step does (glibc's mmap threshold)
    batch = p.get_parsed_content("batch")
    scores_table = p.get_parsed_content("scores_table")
    if calibration is not None and p.get_parsed_content("calibration") is None:
        raise SystemExit(f"the calibration {calibration} does not fit these settings")
    log: dict[tuple[int, str], tuple[float, float]] = {}
    study, base = [0], [0.0]
    steps: list[str] = []
    for key in ("preprocessing", "postprocessing"):
        compose = p.get_parsed_content(key)
        if key == "preprocessing":
            names = ["pre#" + re.split("#|::", str(r))[-1] for r in p[key]["transforms"]]
        else:
            names = ["post#" + name for name in p.get_parsed_content("post_steps")]
        for name, transform in zip(names, compose.transforms, strict=True):
            traced(transform, name, log, study, base)
        steps += names
        if key == "preprocessing":
            steps.append("score (inferer)")
    traced(batch.engine.inferer, "score (inferer)", log, study, base)
    after: list[float] = []
    score_one = batch.score

    def score(item: dict) -> None:
        score_one(item)
        gc.collect()
        after.append(rss_mb("VmRSS") - base[0])
        study[0] += 1

    batch.score = score
    gc.collect()
    base[0] = rss_mb("VmRSS")
    batch.run()
    scores_table.write()
    names = [s["name"] for s in batch.selection.studies]
    return steps, [(n, {s: log.get((i, s), (float("nan"),) * 2) for s in steps}, after[i]) for i, n in enumerate(names)]


def subset(datalist: Path, n: int) -> Path:
    """A datalist of the first ``n`` testing studies of ``datalist``, beside it (paths stay relative to its folder)."""
    content = json.loads(datalist.read_text())
    path = datalist.parent / f"datalist_{n}.json"
    path.write_text(json.dumps({"testing": content["testing"][:n]}, indent=2))
    return path


def calibration_for(datalist: Path, work: Path, t_stride: int) -> Path:
    """A calibration that fits the demo weights and these settings: ``run calibrate`` on the datalist's healthy
    validation studies (made data), written to ``work/calibration_t<t_stride>/calibration.json``."""
    path = work / f"calibration_t{t_stride}" / "calibration.json"
    if not path.is_file():
        whole_process(datalist, work / "calibration_run", t_stride, None, "calibrate",
                      ("inference.yaml", "calibrate.yaml"), ["--calibration_file", str(path)])  # fmt: skip
    return path


def batch_report(work: Path, datalist: Path, t_stride: int, n_batch: int, calibration: Path) -> None:
    """Sections 3 and 4 of the module docstring, printed; the last line gives the four whole-process peaks."""
    peaks = {}
    for n in (1, n_batch):
        for label, cal in (("", None), ("_calibrated", calibration)):
            listed = subset(datalist, n)
            steps, studies = held_per_step(listed, work / f"held_{n}{label}", t_stride, cal)
            what = f"{n} {'study' if n == 1 else 'studies'}, {'with' if cal else 'no'} calibration"
            print(
                f"\n## What stays allocated, step by step ({DATA_NOTE}, {what}, --t_stride {t_stride}), one process\n"
            )
            print("MB over the process's resident size before the first study: held after the step, and its peak.\n")
            shown = [0] if n == 1 else [0, 1, n - 1]
            header = ["step"] + [f"{kind} ({studies[i][0]})" for i in shown for kind in ("held after", "peak")]
            rows = [[step] + [f"{studies[i][1][step][j]:.0f}" for i in shown for j in (0, 1)] for step in steps]
            print(markdown_table(header, rows))
            print("\nheld after each study (MB): " + ", ".join(f"{held:.0f}" for _, _, held in studies))
            extra = ["--calibration_file", str(cal if cal else work / "no_calibration.json")]
            seconds, peak = whole_process(listed, work / f"whole_{n}{label}", t_stride, None, options=extra)
            peaks[f"peak_mb_{n}{label}"] = peak
            print(f"\nwhole `run inference` process ({what}): {seconds:.1f} s, peak resident {peak:.0f} MB")
    heap_rule_cost(work, datalist, t_stride, calibration)
    floor = process_floor(work, t_stride)
    print(
        f"\nthe process floor (`run inference` of one {' x '.join(map(str, FLOOR_SHAPE))} made study, no registration, "
        f"no calibration): peak resident {floor:.0f} MB; the BraTS-sized study adds "
        + ", ".join(f"{k} {v - floor:.0f} MB" for k, v in peaks.items())
    )
    print("\n" + " ".join(f"{k}={v:.0f}" for k, v in {**peaks, "floor_mb": floor}.items()))


def heap_rule_cost(work: Path, datalist: Path, t_stride: int, calibration: Path) -> None:
    """The heap rule's price (``mmap_threshold_mb``, ``scripts/memory.py``, off by default since 0.7.3): one calibrated
    study's whole process with the rule (``--mmap_threshold_mb 1``) and with glibc's own (``null``), one after the
    other, twice, in the order on, off, off, on; both runs' seconds and peaks of each setting, each in ascending order.
    Freed buffers of 1 MB or more go back to the system at once, so each new buffer's pages are faulted in again: fewer
    MB held, more seconds. The threads are those of the environment (``OMP_NUM_THREADS``)."""
    listed = subset(datalist, 1)
    runs: dict[str, list[tuple[float, float]]] = {"1 (the rule)": [], "null (glibc's own)": []}
    for label in ("1 (the rule)", "null (glibc's own)", "null (glibc's own)", "1 (the rule)"):
        options = ["--calibration_file", str(calibration), "--mmap_threshold_mb", label.split()[0]]
        runs[label].append(whole_process(listed, work / "heap_rule", t_stride, None, options=options))
    threads = os.environ.get("OMP_NUM_THREADS", f"unset, {torch.get_num_threads()} by torch's default")
    print(f"\n## The heap rule's price ({DATA_NOTE}, one study with a calibration, --t_stride {t_stride}, "
          f"OMP_NUM_THREADS {threads})\n")  # fmt: skip
    rows = []
    for label, pairs in runs.items():
        seconds, peaks = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
        rows.append([label, " / ".join(f"{x:.1f}" for x in seconds), " / ".join(f"{x:.0f}" for x in peaks)])
    print(markdown_table(["mmap_threshold_mb", "wall seconds (2 runs)", "peak resident MB (2 runs)"], rows))
    (on, off) = ([statistics.median(p[i] for p in pairs) for i in (0, 1)] for pairs in runs.values())
    print(f"\nmedians, rule / none: wall {on[0] / off[0]:.2f}, peak {on[1] / off[1]:.2f} ({on[1] - off[1]:+.0f} MB)")


FLOOR_SHAPE = (48, 48, 32)
"""The made study of :func:`process_floor`, at 5 mm (a brain-sized head): its data cost nothing beside the process."""


def process_floor(work: Path, t_stride: int) -> float:
    """Peak resident MB of ``run inference`` on one tiny made study (:data:`FLOOR_SHAPE`, not registered, no
    calibration): what the process costs whatever the study (the imports, the configs, the network, the scoring's
    activations)."""
    datalist = make_dataset(work / "floor_data", 0, 1, seed=13, shape=FLOOR_SHAPE, spacing=(5.0, 5.0, 5.0))
    options = ["--register", "false", "--calibration_file", str(work / "no_calibration.json")]
    return whole_process(datalist, work / "floor", t_stride, None, options=options)[1]


def main() -> None:
    ap = benchmark_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--work_dir", default="/tmp/andi_study_cost")
    ap.add_argument("--t_stride", type=int, default=25, help="5 timesteps: the other stages do not depend on it")
    ap.add_argument("--batch", type=int, default=8, help="studies in the batch of sections 3 and 4")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--skip_before", action="store_true", help="only sections 3 and 4 (no stage tables)")
    only.add_argument("--heap_only", action="store_true", help="only the heap rule's price (one calibrated study)")
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the whole-process runs, e.g. that of a venv with only `pip install -e .` (what a user"
        " who scores studies installs): the test and demo extras bring scikit-learn and pandas, which MONAI imports",
    )
    args = ap.parse_args()
    PYTHON[0] = args.python
    print(f"whole-process interpreter: {args.python} ({environment(args.python)})\n")
    work = Path(args.work_dir)
    n_anomalous = 1 if args.heap_only else args.batch  # the heap section scores the first study only
    datalist = make_dataset(work / "data", n_healthy=2, n_anomalous=n_anomalous, seed=13, n_validation=2)
    calibration = calibration_for(datalist, work, args.t_stride)
    if args.heap_only:
        heap_rule_cost(work, datalist, args.t_stride, calibration)
        return
    if args.skip_before:
        batch_report(work, datalist, args.t_stride, args.batch, calibration)
        return
    item = json.loads(datalist.read_text())["testing"][0]
    study = {k: (v if k == "name" else str(datalist.parent / v)) for k, v in item.items()}
    before_rows = stages(study, work / "stages_before", args.t_stride, BEFORE)
    after_rows = stages(study, work / "stages_after", args.t_stride, {})
    print(f"## One study's stages ({DATA_NOTE}: 240 x 240 x 155, --t_stride {args.t_stride}), in one process\n")
    header = ["step", "seconds before", "MB it needed before", "seconds after", "MB it needed after"]
    by_step = {r[0]: r[1:] for r in before_rows}
    rows = [[r[0], *by_step.get(r[0], ["-", "-"]), *r[1:]] for r in after_rows]
    print(markdown_table(header, rows))
    before_file = work / "before.yaml"
    before_file.write_text(json.dumps(BEFORE))  # JSON is YAML: merged last by the runner
    before = whole_process(datalist, work / "before", args.t_stride, before_file)
    after = whole_process(datalist, work / "after", args.t_stride, None)
    print(f"\n## The whole `run inference` process ({DATA_NOTE}, one study, /usr/bin/time -v)\n")
    print(markdown_table(["pipeline", "wall seconds", "peak resident (MB)"], [
        ["before: whole-volume anti-aliasing, MONAI MedianSmoothd", f"{before[0]:.1f}", f"{before[1]:.0f}"],
        ["after: pre#antialias in pieces, scipy median_filter", f"{after[0]:.1f}", f"{after[1]:.0f}"],
    ]))  # fmt: skip
    print(
        f"peak_before_mb={before[1]:.0f} peak_after_mb={after[1]:.0f} "
        f"seconds_before={before[0]:.1f} seconds_after={after[0]:.1f}"
    )
    batch_report(work, datalist, args.t_stride, args.batch, calibration)


if __name__ == "__main__":
    run_benchmark(main)
