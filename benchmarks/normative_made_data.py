"""Thresholds calibrated on healthy studies, the normative z-map, study scores and channel fusions, on MADE data.

    python -m benchmarks.normative_made_data --work_dir /work/normative   # 25 min per seed on 2 cores with bf16

Every figure comes from **made (synthetic) data**: the shipped demo weights (trained on the demo's 22 + 2 made healthy
studies), ``--n_healthy`` new made healthy studies for calibration and as many again held out (never seen by the
network nor by the calibration), and the 4 test studies per lesion family of ``benchmarks/faithful.py`` (tumour-like,
MS-like, small cortical T1-dark, T1-bright/T2-dark; 240 x 240 x 155 at 1 mm). Every study is scored once by the
bundle's own preprocessing and ``ANDiInferer`` (the configs of ``inference.yaml``, ``--t_stride``) and its
per-modality maps are kept, so that each channel fusion (max, mean, EPDiff's) reuses them; then, per fusion, the
bundle's post-processing (median filter 5), ``scripts.calibration.calibrate`` on the calibration studies (the code
of ``run calibrate``), and on the held-out and anomalous studies:

* the realised voxel false-positive rate of each calibrated threshold (anomaly map and z-map) on held-out healthy
  studies, after the dilation, as inference segments;
* Dice of the calibrated segmentations beside Yen's (with inference's guard), per lesion family;
* AUPRC of the z-map beside the raw map on brain voxels, and false-positive voxels per held-out healthy study at the
  threshold where each map finds half of the family's lesion voxels;
* where the false positives fall: the share in the places where healthy maps are systematically high (the top 5%
  of the calibration studies' mean log map) and at the brain's edge (2 voxels), against those places' share of the
  brain;
* study-level AUROC (held-out healthy against anomalous) and the sensitivity at a specificity of at least 0.9, for
  each candidate study score.

``--seeds N`` repeats the scoring, the calibration and the segmentations with each noise seed 0 .. N-1 (fusion max):
the table of Yen against the calibrated rule gives mean ± SD over the seeds, the other tables seed 0.

It then runs the bundle's ``run inference`` with the calibration it made (``--segmentation calibrated``) on a few
studies, for an example ``scores.csv`` and an overview with its z-map row. Results go to ``<work_dir>/normative.md``
(``--doc`` copies it and the overview into bundle/docs). Scored maps and each analysis are cached, so a stopped run
resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import REPO
from benchmarks.bench.configs import parsed
from benchmarks.bench.jobs import bundle_command
from benchmarks.bench.main import benchmark_parser, run_benchmark
from benchmarks.bench.report import fmt, markdown_table, write_report
from benchmarks.bench.settings import DATA_NOTE
from benchmarks.bench.spread import fmt_spread
from scripts.calibration import calibrate, load_calibration, segmentation_fpr
from scripts.collect import MapCollector
from scripts.curves import average_precision, binary_curve, roc_auc
from scripts.files import atomic_write_bytes
from scripts.grid import voxel_ml
from scripts.intensity import brain_mask
from scripts.metrics import Subject, dice
from scripts.postprocess import MedianFilter, ReduceChannels, guard_segmentation, yen_segmentation
from scripts.synthetic import make_dataset
from scripts.triage import study_scores

FAMILIES = {
    "tumour": "tumour-like",
    "ms": "MS-like",
    "cortical": "small cortical T1-dark",
    "bright": "T1-bright / T2-dark",
}
FUSIONS = ("max", "mean", "epdiff")
MEDIAN_FILTER = 5
SENSITIVITY = 0.5
SPECIFICITY = 0.9


def log(text: str) -> None:
    print(text, flush=True)


def studies_of(datalist: Path, key: str) -> list[dict[str, str]]:
    items = json.loads(datalist.read_text())[key]
    return [{k: (v if k == "name" else str(datalist.parent / v)) for k, v in item.items()} for item in items]


def make_data(work: Path, n_healthy: int) -> dict[str, list[dict[str, str]]]:
    """Held-out and calibration healthy studies (new seeds), and faithful.py's test set (its seeds)."""
    healthy = make_dataset(work / "data" / "healthy", n_healthy=2 * n_healthy, n_validation=n_healthy, seed=21)
    test = make_dataset(work / "data" / "test", n_healthy=0, n_anomalous=4, lesion=list(FAMILIES), seed=7)
    return {
        "calibration": studies_of(healthy, "validation"),
        "held_out": studies_of(healthy, "training"),
        "anomalous": studies_of(test, "testing"),
    }


def maps_dir(work: Path, t_stride: int, seed: int) -> Path:
    """Where the maps of one noise seed are kept (seed 0 where they always were)."""
    return work / "maps" / (f"stride{t_stride}" if seed == 0 else f"stride{t_stride}_seed{seed}")


def score_all(work: Path, groups: dict[str, list[dict]], t_stride: int, seed: int = 0) -> tuple[dict[str, Path], int]:
    """Per-modality maps (4, H, W, D) of every study, scored once with the configured preprocessing and inferer, with
    the scoring noise of ``seed``; (study -> map file, how many were found scored by an earlier run)."""
    overrides = {"t_stride": t_stride, "voxel_set": "volume", "seed": seed}
    preprocessing = parsed("preprocessing", ["inference.yaml"], **overrides)
    inferer = parsed("inferer", ["inference.yaml"], **overrides)
    network = parsed("network", ["inference.yaml"], **overrides)
    out, found = {}, 0
    studies = [s for group in groups.values() for s in group]
    for i, study in enumerate(studies):
        path = maps_dir(work, t_stride, seed) / f"{study['name']}.npz"
        out[study["name"]] = path
        if path.is_file():
            found += 1
            continue
        start = time.time()
        data = preprocessing(dict(study))
        with torch.inference_mode():
            maps = inferer(data["image"][None], network)[0].numpy()
        label = data.get("label")
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            maps=maps.astype(np.float32),
            brain=brain_mask(data["image"])[0].numpy(),
            label=np.zeros(maps.shape[1:], bool) if label is None else label[0].numpy() > 0.5,
            voxel_ml=voxel_ml(data["image"]),
        )
        atomic_write_bytes(buffer.getvalue(), path)
        log(f"seed {seed}: scored {study['name']} ({i + 1}/{len(studies)}) in {time.time() - start:.0f} s")
    return out, found


def reduced(path: Path, fusion: str) -> Subject:
    """A study's map after the fusion and the median filter (inference's post-processing), with its brain."""
    with np.load(path) as z:
        maps, brain, label, ml = z["maps"], z["brain"], z["label"], float(z["voxel_ml"])
    a = ReduceChannels(fusion)(torch.as_tensor(maps))
    a = MedianFilter(MEDIAN_FILTER)(a)[0].numpy()
    return Subject(path.stem, a.astype(np.float32), label & brain, brain, healthy=brain & ~label, voxel_ml=ml)


def threshold_at_sensitivity(values: np.ndarray, sensitivity: float) -> float:
    return float(np.quantile(values, 1.0 - sensitivity))


def study_auroc(healthy: list[float], anomalous: list[float]) -> tuple[float, float]:
    """(AUROC, sensitivity at specificity >= SPECIFICITY) of study scores."""
    scores = np.array(healthy + anomalous)
    targets = np.array([0] * len(healthy) + [1] * len(anomalous), bool)
    auroc = roc_auc(binary_curve(scores, targets))
    allowed = int(np.floor((1 - SPECIFICITY) * len(healthy)))  # false positives allowed
    cut = np.sort(healthy)[::-1][allowed] if allowed < len(healthy) else -np.inf
    return auroc, float(np.mean(np.array(anomalous) > cut))


def analyse(
    work: Path, maps: dict[str, Path], groups: dict[str, list[dict]], fusion: str, t_stride: int, seed: int = 0
) -> dict:
    """Every figure of one fusion, from the maps of one noise ``seed`` (see the module docstring)."""
    calibration = MapCollector()
    for s in groups["calibration"]:
        calibration.add(reduced(maps[s["name"]], fusion))
    overrides = {"t_stride": t_stride, "channel_reduction": fusion, "seed": seed}
    settings = parsed("calibration_settings", ["inference.yaml"], **overrides)
    weights = parsed("weights", ["inference.yaml"])  # (the name of the shipped weights since 0.6.0)
    path = work / "calibration" / f"stride{t_stride}_{fusion}{'' if seed == 0 else f'_seed{seed}'}" / "calibration.json"
    value = calibrate(calibration, path, settings, weights, made_by=f"benchmarks/normative_made_data.py ({DATA_NOTE})")
    cal = load_calibration(path, settings, weights, required=True)
    model = cal.normative
    held = [reduced(maps[s["name"]], fusion) for s in groups["held_out"]]
    anomalous = [reduced(maps[s["name"]], fusion) for s in groups["anomalous"]]
    for s in held + anomalous:
        s.z = model.zmap(s.a, s.mask)  # type: ignore[attr-defined]
    result: dict = {"value": value, "fpr": {}, "families": {}, "study": {}, "where": {}}
    # realised false-positive rates on held-out healthy studies
    for name in ("anomaly", "zmap"):
        for fpr, thr in zip(cal.target_fprs, cal.thresholds[name], strict=True):
            m = [s.a if name == "anomaly" else s.z for s in held]
            result["fpr"][(name, fpr)] = segmentation_fpr(held, m, thr, 1, "volume")
    # where false positives fall (held-out healthy, FPR 1e-3)
    mean_log = model.location
    brain_any = np.any([s.mask for s in calibration.subjects], axis=0)
    high = brain_any & (mean_log >= np.quantile(mean_log[brain_any], 0.95))
    from scipy import ndimage

    for name in ("anomaly", "zmap"):
        thr = cal.threshold(name, 1e-3)
        in_high = in_edge = total = brain_high = brain_edge = brain_total = 0
        for s in held:
            edge = s.mask & ~ndimage.binary_erosion(s.mask, iterations=2)
            seg, _ = yen_segmentation(s.a if name == "anomaly" else s.z, s.mask, 1, thr, "volume")
            fp = seg.astype(bool) & s.mask
            in_high += np.count_nonzero(fp & high)
            in_edge += np.count_nonzero(fp & edge)
            total += np.count_nonzero(fp)
            brain_high += np.count_nonzero(s.mask & high)
            brain_edge += np.count_nonzero(edge)
            brain_total += np.count_nonzero(s.mask)
        result["where"][name] = {
            "high": in_high / max(1, total),
            "edge": in_edge / max(1, total),
            "high_share": brain_high / brain_total,
            "edge_share": brain_edge / brain_total,
            "fp": total / len(held),
        }
    # per family: AUPRC, FP at equal sensitivity, Dice calibrated vs Yen
    for family in FAMILIES:
        members = [s for s in anomalous if s.name.startswith(family + "_")]
        row: dict = {}
        for name in ("anomaly", "zmap"):
            scores = np.concatenate([(s.a if name == "anomaly" else s.z)[s.mask] for s in members])
            targets = np.concatenate([s.label[s.mask] for s in members])
            row[f"auprc_{name}"] = average_precision(binary_curve(scores, targets))
            thr = threshold_at_sensitivity(scores[targets], SENSITIVITY)
            row[f"fp_{name}"] = float(
                np.mean([np.count_nonzero((s.a if name == "anomaly" else s.z)[s.healthy] > thr) for s in held])
            )
            for fpr in (1e-2, 1e-3):
                t = cal.threshold(name, fpr)
                d = [
                    dice(yen_segmentation(s.a if name == "anomaly" else s.z, s.mask, 1, t, "volume")[0], s.label)
                    for s in members
                ]
                row[f"dice_{name}_{fpr:g}"] = float(np.nanmean(d))
        yen = []
        for s in members:
            seg, _ = yen_segmentation(s.a, s.mask, 1, None, "volume")
            seg, _, _ = guard_segmentation(seg, s.mask, 0.5)
            yen.append(dice(seg, s.label))
        row["dice_yen"] = float(np.nanmean(yen))
        row["lesion_ml"] = float(np.median([np.count_nonzero(s.label) * s.voxel_ml for s in members]))
        result["families"][family] = row

    # study-level scores
    def candidates(s: Subject) -> dict[str, float]:
        seg_a = yen_segmentation(s.a, s.mask, 1, cal.threshold("anomaly", 1e-3), "volume")[0]
        seg_z = yen_segmentation(s.z, s.mask, 1, cal.threshold("zmap", 1e-3), "volume")[0]
        out = study_scores(s.a, s.mask, s.z, seg_a, s.voxel_ml)
        out["zmap_volume_ml"] = study_scores(s.a, s.mask, None, seg_z, s.voxel_ml)["lesion_volume_ml"]
        return out

    held_scores = [candidates(s) for s in held]
    anom_scores = {s.name: candidates(s) for s in anomalous}
    for rule in held_scores[0]:
        h = [c[rule] for c in held_scores]
        per = {"all": study_auroc(h, [c[rule] for c in anom_scores.values()])}
        for family in FAMILIES:
            per[family] = study_auroc(h, [c[rule] for n, c in anom_scores.items() if n.startswith(family + "_")])
        result["study"][rule] = per
    return result


def analysis(
    work: Path, maps: dict[str, Path], groups: dict[str, list[dict]], fusion: str, t_stride: int, seed: int = 0
) -> tuple[dict, bool]:
    """:func:`analyse`, kept in ``<work_dir>/analysis/`` as JSON with a digest of its code, so that a stopped or
    repeated run (another ``--seeds``, another table) does not analyse the same maps again; (result, reused)."""
    code = hashlib.sha256(inspect.getsource(analyse).encode()).hexdigest()[:16]
    path = work / "analysis" / f"stride{t_stride}_{fusion}_seed{seed}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("code") == code:
            result = saved["result"]
            result["fpr"] = {(name, fpr): value for name, fpr, value in result["fpr"]}
            return result, True
    result = analyse(work, maps, groups, fusion, t_stride, seed)
    encoded = {**result, "fpr": [[name, fpr, value] for (name, fpr), value in result["fpr"].items()]}
    atomic_write_bytes(json.dumps({"code": code, "result": encoded}, default=float).encode(), path)
    return result, False


def example_run(work: Path, groups: dict[str, list[dict]], t_stride: int, fusion: str) -> tuple[Path, float]:
    """The bundle's run inference with the bench's calibration on 2 held-out healthy and 1 study per family."""
    picks = groups["held_out"][:2] + [next(s for s in groups["anomalous"] if s["name"].startswith(f)) for f in FAMILIES]
    datalist = work / "example" / "datalist.json"
    datalist.parent.mkdir(parents=True, exist_ok=True)
    datalist.write_text(json.dumps({"testing": picks}, indent=2))
    out = work / "example" / "out"
    calibration = work / "calibration" / f"stride{t_stride}_{fusion}" / "calibration.json"
    overrides = {
        "dataset_dir": datalist,
        "output_dir": out,
        "t_stride": t_stride,
        "channel_reduction": fusion,
        "calibration_file": calibration,
        "segmentation": "calibrated",
        "segment_map": "anomaly",
        "target_fpr": 0.001,
    }
    start = time.time()
    if not (out / "scores.csv").is_file():
        cmd = bundle_command("inference", ["inference.yaml"], overrides)
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return out, time.time() - start


def rules_section(per_seed: list[dict[str, dict]]) -> list[str]:
    """Yen (with inference's guard) against the calibrated rule (the raw map at FPR 1e-3 and 1e-2, and the z-map at
    1e-3, ``--segment_map zmap``; fusion max), per lesion family, as mean ± SD over the noise seeds (each seed scores,
    calibrates and evaluates anew), each calibrated rule at 1e-3 paired with Yen by seed; with the rates the
    calibrated thresholds reach on the held-out healthy studies."""
    runs = [r["max"] for r in per_seed]
    rules = {"raw 1e-3": "dice_anomaly_0.001", "z-map 1e-3": "dice_zmap_0.001"}  # each is paired with Yen
    header = [
        "family",
        "Dice Yen (guarded)",
        "Dice calibrated raw 1e-3",
        "Dice calibrated raw 1e-2",
        "Dice calibrated z-map 1e-3",
        *(f"{rule} minus Yen" for rule in rules),
    ]

    def per_run(key: str, families: list[str]) -> list[float]:  # the mean over ``families`` of one figure, per seed
        return [float(np.mean([r["families"][f][key] for f in families])) for r in runs]

    rows = []
    for families, name in [*(([f], n) for f, n in FAMILIES.items()), (list(FAMILIES), "**mean of the families**")]:
        yen = per_run("dice_yen", families)
        row = [name, fmt_spread(yen), fmt_spread(per_run(rules["raw 1e-3"], families))]
        row.append(fmt_spread(per_run("dice_anomaly_0.01", families)) if len(families) == 1 else "")
        row.append(fmt_spread(per_run(rules["z-map 1e-3"], families)))
        for key in rules.values():
            row.append(fmt_spread([v - y for v, y in zip(per_run(key, families), yen, strict=True)]))
        rows.append(row)
    held = {m: fmt_spread([1e3 * r["fpr"][(m, 1e-3)] for r in runs], 2) for m in ("anomaly", "zmap")}
    return [
        f"## Yen against the calibrated rule: {len(runs)} noise seed(s) (fusion max)",
        "",
        "Each seed scores every study with its own scoring noise, calibrates on the calibration studies and segments "
        "the test studies; mean ± SD over the seeds. The differences are paired by seed. At the 1e-3 target, the "
        f"calibrated thresholds reached a false-positive rate of {held['anomaly']} x 1e-3 (raw map) and "
        f"{held['zmap']} x 1e-3 (z-map) on the held-out healthy studies.",
        "",
        markdown_table(header, rows),
        "",
    ]


def report(
    per_seed: list[dict[str, dict]],
    example: Path,
    args: argparse.Namespace,
    minutes: float,
    reused: int = 0,
    reused_maps: int = 0,
) -> str:
    """The report: the rules' table over every seed; every other table from seed 0. ``reused`` analyses and
    ``reused_maps`` scored maps were found in the work folder (their time is not in ``minutes``)."""
    results = per_seed[0]
    note = f"**{DATA_NOTE}**"
    found = [f"{n} {what}" for n, what in ((reused, "analyses"), (reused_maps, "scored maps")) if n]
    took = f"{minutes:.0f} min" + (f" in a run that reused {' and '.join(found)} of an earlier run" if found else "")
    lines = [
        f"# Calibrated thresholds, the normative z-map and study scores, on {DATA_NOTE}",
        "",
        f"`python -m benchmarks.normative_made_data --work_dir {args.work_dir} --n_healthy {args.n_healthy} --seeds "
        f"{args.seeds}` ({time.strftime('%Y-%m-%d')}, "
        "2 CPU cores, "
        f"{took}). Every figure is on {note}: the shipped demo weights; {args.n_healthy} new made healthy "
        f"studies for calibration and {args.n_healthy} held out; 4 made test studies per lesion family "
        f"(benchmarks/faithful.py's); t = 75, 75 + {args.t_stride}, ... < 200 (`--t_stride {args.t_stride}`), "
        f"voxel set volume, median filter {MEDIAN_FILTER}, one dilation. AUPRC here is on brain voxels.",
        "",
    ]
    r = results["max"]
    lines += [
        "## Calibration: realised false-positive rates on held-out healthy studies (fusion max, noise seed 0)",
        "",
    ]
    header = ["map", "target FPR", "threshold", "calibration studies", "held-out studies", "held-out / target"]
    rows = []
    for name in ("anomaly", "zmap"):
        v = r["value"]
        for i, fpr in enumerate(v["target_fprs"]):
            held = r["fpr"][(name, fpr)]
            made = v["realised_fpr_calibration_studies"][name][i]
            rows.append([name, f"{fpr:g}", f"{v['thresholds'][name][i]:.4g}", f"{made:.2e}", f"{held:.2e}",
                         fmt(held / fpr, 2)])  # fmt: skip
    lines += [markdown_table(header, rows), ""]
    for fusion in FUSIONS:
        r = results[fusion]
        lines += [f"## Per lesion family (fusion {fusion}, noise seed 0)", ""]
        header = ["family", "lesion ml (median)", "AUPRC raw", "AUPRC z-map",
                  f"FP voxels / healthy study at sensitivity {SENSITIVITY}: raw", "... z-map",
                  "Dice Yen (guarded)", "Dice calibrated raw 1e-2", "raw 1e-3", "z-map 1e-2", "z-map 1e-3"]  # fmt: skip
        rows = []
        for family, name in FAMILIES.items():
            f = r["families"][family]
            rows.append([name, fmt(f["lesion_ml"], 1), fmt(f["auprc_anomaly"]), fmt(f["auprc_zmap"]),
                         fmt(f["fp_anomaly"], 0), fmt(f["fp_zmap"], 0), fmt(f["dice_yen"]),
                         fmt(f["dice_anomaly_0.01"]), fmt(f["dice_anomaly_0.001"]), fmt(f["dice_zmap_0.01"]),
                         fmt(f["dice_zmap_0.001"])])  # fmt: skip
        lines += [markdown_table(header, rows), ""]
    lines += rules_section(per_seed)
    lines += ["## Channel fusions: AUPRC of the raw map per family (noise seed 0)", ""]
    header = ["fusion", *FAMILIES.values()]
    rows = [[fusion, *[fmt(results[fusion]["families"][f]["auprc_anomaly"]) for f in FAMILIES]] for fusion in FUSIONS]
    lines += [markdown_table(header, rows), ""]
    r = results["max"]
    lines += [
        "## Where the held-out false positives fall (fusion max, calibrated at FPR 1e-3, noise seed 0)",
        "",
        "'high' is where the calibration studies' mean log map is in its top 5% of brain voxels (the places where "
        "healthy maps are systematically high); 'edge' is the outer 2 voxels of the brain.",
        "",
    ]
    header = ["map", "FP voxels / study", "in 'high' places", "their share of the brain", "at the edge",
              "its share of the brain"]  # fmt: skip
    rows = []
    for name in ("anomaly", "zmap"):
        w = r["where"][name]
        rows.append([name, fmt(w["fp"], 0), f"{100 * w['high']:.0f}%", f"{100 * w['high_share']:.0f}%",
                     f"{100 * w['edge']:.0f}%", f"{100 * w['edge_share']:.0f}%"])  # fmt: skip
    lines += [markdown_table(header, rows), ""]
    lines += [
        f"## Study level: held-out healthy ({args.n_healthy}) against anomalous studies (fusion max, noise seed 0)",
        "",
        f"AUROC / sensitivity at specificity >= {SPECIFICITY}. Candidate scores: the 99.9th percentile of the "
        "z-map or of the raw map in the brain; the volume of the calibrated (FPR 1e-3) segmentation of the raw map "
        "(lesion_volume_ml) or of the z-map.",
        "",
    ]
    header = ["score", "all 16", *FAMILIES.values()]
    rows = []
    for rule, per in r["study"].items():
        rows.append([rule, *[f"{fmt(per[k][0])} / {fmt(per[k][1], 2)}" for k in ("all", *FAMILIES)]])
    lines += [markdown_table(header, rows), ""]
    scores = (example / "scores.csv").read_text()
    lines += [
        "## Example `scores.csv`",
        "",
        "From the bundle's `run inference --segmentation calibrated --segment_map anomaly --target_fpr 0.001` (the raw "
        f"map) with this calibration, on 2 held-out healthy and one study per family ({DATA_NOTE}):",
        "",
        "```",
        scores.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="/work/normative")
    parser.add_argument("--n_healthy", type=int, default=12, help="healthy studies for calibration, and held out")
    parser.add_argument("--t_stride", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds of the rules' table (0 .. N-1)")
    parser.add_argument("--doc", action="store_true", help="copy the report and an overview into bundle/docs")
    args = parser.parse_args()
    start = time.time()
    work = Path(args.work_dir)
    groups = make_data(work, args.n_healthy)
    per_seed, reused, reused_maps = [], 0, 0
    for seed in range(args.seeds):
        maps, found_maps = score_all(work, groups, args.t_stride, seed)
        reused_maps += found_maps
        results = {}
        for fusion in FUSIONS if seed == 0 else ("max",):
            log(f"seed {seed}: analysing fusion {fusion}")
            results[fusion], found = analysis(work, maps, groups, fusion, args.t_stride, seed)
            reused += found
        per_seed.append(results)
    example, _ = example_run(work, groups, args.t_stride, "max")
    text = report(per_seed, example, args, (time.time() - start) / 60, reused, reused_maps)
    write_report(text, work / "normative.md")
    print(text)
    if args.doc:
        docs = REPO / "bundle" / "docs"
        (docs / "images").mkdir(exist_ok=True)
        shutil.copyfile(example / "tumour_000" / "overview.png", docs / "images" / "overview_zmap_made_data.png")
        write_report(text, docs / "normative_made_data.md")
    log(f"written to {work / 'normative.md'}")


if __name__ == "__main__":
    run_benchmark(main)
