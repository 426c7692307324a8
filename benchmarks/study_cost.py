"""Whole-study cost: seconds and peak memory of each stage, and of the whole process, for one BraTS-sized study.

    python benchmarks/study_cost.py [--work_dir /tmp/andi_study_cost] [--t_stride 25]

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

Memory is in MB of 2^20 bytes (MiB). The last line reads
``peak_before_mb=<a> peak_after_mb=<b> seconds_before=<c> seconds_after=<d>``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from benchmarks.bench import REPO  # noqa: E402
from benchmarks.bench.jobs import config_files  # noqa: E402
from benchmarks.bench.report import markdown_table  # noqa: E402
from benchmarks.bench.settings import DATA_NOTE  # noqa: E402
from scripts.configs import config_parser  # noqa: E402
from scripts.synthetic import make_dataset  # noqa: E402

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
    order_post = [re.split("#|::", str(r))[-1] for r in p["postprocessing"]["transforms"]]
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


def whole_process(datalist: Path, out_dir: Path, t_stride: int, extra: Path | None) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of ``run inference`` on the study, from ``/usr/bin/time -v``."""
    configs = ast.literal_eval(config_files(["inference.yaml"]))  # the list literal the runner reads
    if extra is not None:
        configs.append(str(extra))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
           str(configs), "--bundle_root", "bundle", "--dataset_dir", str(datalist), "--output_dir", str(out_dir),
           "--t_stride", str(t_stride), "--overwrite", "true"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "ANDI_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"run inference failed:\n{proc.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    return seconds, peak_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work_dir", default="/tmp/andi_study_cost")
    ap.add_argument("--t_stride", type=int, default=25, help="5 timesteps: the other stages do not depend on it")
    args = ap.parse_args()
    work = Path(args.work_dir)
    datalist = make_dataset(work / "data", n_healthy=0, n_anomalous=1, lesion="tumour", seed=13)
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


if __name__ == "__main__":
    main()
