"""The benchmarks' spread over seeds: mean ± SD, the frontier's spread table on tiny made volumes, and the modality
sets' table read from evaluations, and Yen against the calibrated rule over seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench.frontier import quality
from benchmarks.bench.frontier import spread as frontier_spread
from benchmarks.bench.frontier.networks import Network
from benchmarks.bench.frontier.studies import Study
from benchmarks.bench.spread import fmt_spread, mean_sd
from benchmarks.faithful import FAMILIES
from benchmarks.modality_sets import contrast_section, parse_sets, results_section
from benchmarks.normative_made_data import FAMILIES as NORMATIVE_FAMILIES
from benchmarks.normative_made_data import rules_section
from benchmarks.v2 import family_table, run_tag


def test_mean_and_sample_sd():
    assert mean_sd([0.4, 0.42, 0.41]) == pytest.approx((0.41, 0.01))
    assert fmt_spread([0.4, 0.42, 0.41]) == "0.410 ± 0.010"
    assert fmt_spread([0.5]) == "0.500", "one run: no SD"
    assert fmt_spread([]) == "-"


def toy_spread(monkeypatch, factor: float = 0.3) -> tuple[list[Study], Network, list[int]]:
    """Two tiny made studies (a bright T2-like lesion each) and a toy network that counts its calls."""
    g = torch.Generator().manual_seed(0)
    studies = []
    for name in ("tumour_000", "ms_000"):
        image = torch.rand((4, 16, 16, 6), generator=g) * 0.2
        image[:, 2:14, 2:14] += 0.5
        label = np.zeros((16, 16, 6), bool)
        label[5:9, 5:9, 2:4] = True
        image[3, 5:9, 5:9, 2:4] += 0.8
        brain = (image[0] > 0.4).numpy()
        studies.append(Study(name, image, label, brain))
    calls = []
    network = Network("toy", Path("none"), "tiny")
    network.module = lambda x, timesteps: calls.append(1) or factor * x
    for module in (quality, frontier_spread):  # each reads the constant it imported
        monkeypatch.setattr(module, "MEDIAN_FILTER", 3)
    return studies, network, calls


def spread_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(
        t_lower=75, t_upper=80, seeds=2, spread_subsets="window_5,stride_2", new_default="toy:window_5",
        old_default="toy:stride_2", **kw,
    )  # fmt: skip


def test_frontier_spread_gives_each_row_over_the_seeds(tmp_path, monkeypatch):
    """Two noise seeds, two rows, four tiny made studies: a per-seed AUPRC each, their mean ± SD, and the paired
    difference of the new default against the old; each seed its own noise, each study its own."""
    studies, network, _ = toy_spread(monkeypatch)
    text = frontier_spread.spread(spread_args(), tmp_path, studies, [network], {})
    rows = [line for line in text.splitlines() if line.startswith("| toy:")][:2]  # the table over the seeds
    assert len(rows) == 2 and all("±" in r for r in rows), text
    per_seed = [float(v) for v in rows[0].split("|")[3].split(",")]
    assert len(per_seed) == 2 and per_seed[0] != per_seed[1], "each seed its own noise"
    assert "made (synthetic) data" in text.lower() or "made" in text
    paired = [line for line in text.splitlines() if line.startswith("- toy:window_5 minus toy:stride_2 (paired")]
    assert len(paired) == 2 and all("over 2 seeds" in line for line in paired), "MF 3 and off"
    assert all("paired t-test p = " in line or "too few seeds" in line for line in paired), paired
    header = next(line for line in text.splitlines() if line.startswith("| row | tumour_000 | ms_000 |"))
    per_study = text[text.index(header) :].splitlines()[2:4]
    assert [r.split("|")[1].strip() for r in per_study] == ["toy:window_5", "toy:stride_2"], text
    assert all(r.count("±") == 2 for r in per_study), "each study: mean ± SD over the 2 seeds"
    assert (tmp_path / "cache" / "seed1" / "toy").is_dir()


def test_frontier_spread_goes_on_from_kept_figures_on_a_fresh_machine(tmp_path, monkeypatch):
    """With keep_dir, each study's figures are kept as soon as they are made: a second sitting with no work folder
    scores nothing and gives the same table; figures kept for other weights are not used."""
    keep = tmp_path / "repo" / "kept"
    studies, network, calls = toy_spread(monkeypatch)
    real_fill = frontier_spread.LogCache.fill

    def stop_at_the_second_study(cache, *a):
        if calls:
            raise KeyboardInterrupt  # the sitting ends inside the second study
        real_fill(cache, *a)

    monkeypatch.setattr(frontier_spread.LogCache, "fill", stop_at_the_second_study)
    with pytest.raises(KeyboardInterrupt):
        frontier_spread.spread(spread_args(keep_dir=keep), tmp_path / "work0", studies, [network], {})
    assert len(json.loads((keep / "spread_auprc_toy_seed0.json").read_text())["figures"]) == 2, "1 study x 2 rows"
    monkeypatch.setattr(frontier_spread.LogCache, "fill", real_fill)

    calls.clear()  # sitting 1 again, on a fresh machine: the first study's figures came back, the rest is scored
    first = frontier_spread.spread(spread_args(keep_dir=keep), tmp_path / "work1", studies, [network], {})
    assert not list((tmp_path / "work1" / "cache" / "seed0" / "toy").glob("tumour_000*"))
    assert calls and sorted(p.name for p in keep.iterdir()) == [f"spread_auprc_toy_seed{s}.json" for s in (0, 1)]
    kept = json.loads((keep / "spread_auprc_toy_seed0.json").read_text())
    assert kept["context"]["seed"] == 0 and set(kept["context"]["studies"]) == {"tumour_000", "ms_000"}
    assert len(kept["figures"]) == 4, "2 studies x 2 rows"

    calls.clear()  # sitting 2: a fresh work folder, the kept folder came with the repository
    second = frontier_spread.spread(spread_args(keep_dir=keep), tmp_path / "work2", studies, [network], {})
    assert not calls, "kept figures must not be scored again"
    assert second == first and not (tmp_path / "work2" / "cache").exists()

    other_weights = tmp_path / "other.pt"
    other_weights.write_bytes(b"other weights")
    network.weights = other_weights  # other weights: the kept figures do not count
    frontier_spread.spread(spread_args(keep_dir=keep), tmp_path / "work3", studies, [network], {})
    assert calls, "figures kept for other weights must not be reused"


def test_modality_sets_report_gives_auprc_lift_and_what_each_set_sees(tmp_path):
    """Two sets, two noise seeds each, from the evaluations' metrics.json: AUPRC as mean ± SD, the lift over a blind
    map (AUPRC / prevalence) and the families a set sees at the lift asked for; the voxel set and median filter of
    the table are the ones asked for, not another row of the file."""
    sets = parse_sets("t1_t2=t1,t2; flair=flair")
    assert sets == {"t1_t2": ["t1", "t2"], "flair": ["flair"]}
    with pytest.raises(SystemExit, match="error: --sets: 'flair' is not name=seq,seq"):
        parse_sets("flair")
    outs = {}
    for name, auprcs in (("t1_t2", (0.05, 0.07)), ("flair", (0.30, 0.34))):
        for family in FAMILIES:
            for n, auprc in enumerate(auprcs):
                out = tmp_path / f"{name}_{family}_{n}"
                out.mkdir()
                rows = [
                    {"voxel_set": "volume", "median_filter": 5, "auprc": auprc, "ceil_dice": 0.1, "prevalence": 0.02},
                    {"voxel_set": "brain", "median_filter": 5, "auprc": 0.9, "ceil_dice": 0.9, "prevalence": 0.04},
                    {"voxel_set": "volume", "median_filter": 3, "auprc": 0.9, "ceil_dice": 0.9, "prevalence": 0.02},
                ]
                (out / "metrics.json").write_text(json.dumps({"metrics": rows}))
                outs.setdefault((name, family), []).append(out)
    args = argparse.Namespace(voxel_set="volume", median_filter=5, seen_lift=5.0, train_seeds=1, seeds=2)
    text = "\n".join(results_section(args, sets, outs))
    t1_t2 = next(line for line in text.splitlines() if line.startswith("| t1_t2 (t1, t2)"))
    flair = next(line for line in text.splitlines() if line.startswith("| flair (flair)"))
    assert "0.060 ± 0.014 | 3.0 |" in t1_t2 and t1_t2.endswith("| none |"), t1_t2
    assert "0.320 ± 0.028 | 16.0 |" in flair and "tumour-like" in flair.split("|")[-2], flair
    assert "tumour-like 2.00%" in text
    contrast = "\n".join(contrast_section())
    assert "| tumour-like (oedema) | 0.78 | 0.80 | 1.90 | 1.75 |" in contrast, contrast


def test_normative_bench_gives_yen_against_the_calibrated_rule_over_seeds():
    """Two seeds: per family Dice_Yen and the calibrated rule's Dice as mean ± SD, their difference paired by seed,
    and the held-out rate the threshold reached."""

    def run(yen: float, calibrated: float, zmap: float, held: float) -> dict:
        families = {
            f: {"dice_yen": yen, "dice_anomaly_0.001": calibrated, "dice_anomaly_0.01": 0.1, "dice_zmap_0.001": zmap}
            for f in NORMATIVE_FAMILIES
        }
        families["ms"] = {**families["ms"], "dice_zmap_0.001": zmap + 0.4}
        return {"max": {"families": families, "fpr": {("anomaly", 1e-3): held, ("zmap", 1e-3): held / 4}}}

    text = "\n".join(rules_section([run(0.2, 0.5, 0.3, 1.0e-3), run(0.3, 0.5, 0.2, 1.2e-3)]))
    tumour = next(line for line in text.splitlines() if line.startswith("| tumour-like"))
    assert tumour == (
        "| tumour-like | 0.250 ± 0.071 | 0.500 ± 0.000 | 0.100 ± 0.000 | 0.250 ± 0.071 "
        "| 0.250 ± 0.071 | 0.000 ± 0.141 |"
    ), tumour
    mean = next(line for line in text.splitlines() if line.startswith("| **mean"))
    assert mean == (
        "| **mean of the families** | 0.250 ± 0.071 | 0.500 ± 0.000 |  | 0.350 ± 0.071 "
        "| 0.250 ± 0.071 | 0.100 ± 0.141 |"
    ), mean
    assert "2 noise seed(s)" in text and "1.10 ± 0.14 x 1e-3 (raw map)" in text
    assert "0.28 ± 0.04 x 1e-3 (z-map)" in text


def test_normative_analysis_is_kept_and_read_back(tmp_path, monkeypatch):
    """An analysis of one fusion and seed is kept as JSON: a second run reads it back (numpy figures, the FPR table's
    (map, target) keys) without analysing; an analysis of other code is done again."""
    from benchmarks import normative_made_data

    calls = []

    def analyse(work, maps, groups, fusion, t_stride, seed=0):
        calls.append(seed)
        families = {"tumour": {"dice_yen": np.float32(0.5)}}
        fpr = {("anomaly", 1e-3): np.float64(0.0012)}
        return {"value": {}, "fpr": fpr, "where": {}, "families": families, "study": {"score": {"all": (0.9, 1.0)}}}

    monkeypatch.setattr(normative_made_data, "analyse", analyse)
    first, reused = normative_made_data.analysis(tmp_path, {}, {}, "max", 25, 1)
    again, reused_again = normative_made_data.analysis(tmp_path, {}, {}, "max", 25, 1)
    assert calls == [1] and not reused and reused_again
    assert again["fpr"][("anomaly", 1e-3)] == pytest.approx(0.0012)
    assert again["families"]["tumour"]["dice_yen"] == pytest.approx(0.5) and again["study"]["score"]["all"][1] == 1.0

    def changed(*a, **k):  # another analyse: its kept results do not count
        return analyse(*a, **k)

    monkeypatch.setattr(normative_made_data, "analyse", changed)
    assert normative_made_data.analysis(tmp_path, {}, {}, "max", 25, 1)[1] is False and calls == [1, 1]


def test_v2_bench_gives_each_model_over_its_runs(tmp_path):
    """The v2 report's table: a row per model and median filter, figures as mean ± SD over the runs given (two runs
    of each model), the number of runs shown, v2 with its own median filter 4."""
    assert [run_tag("range", 0, 0), run_tag("range", 1, 0), run_tag("v2", 1, 2)] == ["range", "range_t1", "v2_t1_s2"]
    outs = {}
    for model, auprcs in (("default", (0.2, 0.4)), ("v2", (0.5, 0.5))):
        for i, auprc in enumerate(auprcs):
            out = tmp_path / f"{model}{i}"
            out.mkdir()
            rows = [
                {"voxel_set": "volume", "median_filter": mf, "auprc": auprc, "ceil_dice": 0.3, "dice_yen": 0.1,
                 "segmented_fraction_median": 0.01}
                for mf in (0, 3, 4, 5)
            ]  # fmt: skip
            (out / "metrics.json").write_text(json.dumps({"metrics": rows}))
            outs.setdefault(f"{model} tumour", []).append(out)
    table = family_table(outs, "tumour")
    assert "| default | 5 | 2 | 0.300 ± 0.141 | 0.300 ± 0.000 |" in table, table
    assert "| v2 | 4 | 2 | 0.500 ± 0.000 |" in table and "| default | 4 |" not in table


def test_normative_scoring_counts_the_maps_an_earlier_run_kept(tmp_path, monkeypatch):
    """A rerun that finds every map scored scores none and says how many it reused (its report's time is not the
    time the maps took); a missing map is scored."""
    from benchmarks import normative_made_data

    monkeypatch.setattr(normative_made_data, "parsed", lambda key, *a, **k: None)  # no configs, no network
    scored = []

    def preprocess(study: dict) -> dict:  # the preprocessing of a missing study: record it and stop
        scored.append(study["name"])
        raise RuntimeError("scored")

    def preprocessing_of(key, *a, **k):
        return preprocess if key == "preprocessing" else None

    groups = {"held_out": [{"name": "healthy_000"}, {"name": "healthy_001"}]}
    folder = normative_made_data.maps_dir(tmp_path, 25, 1)
    folder.mkdir(parents=True)
    for study in groups["held_out"]:
        (folder / f"{study['name']}.npz").write_bytes(b"kept")
    maps, found = normative_made_data.score_all(tmp_path, groups, 25, 1)
    assert found == 2 and sorted(maps) == ["healthy_000", "healthy_001"]
    (folder / "healthy_001.npz").unlink()
    monkeypatch.setattr(normative_made_data, "parsed", preprocessing_of)
    with pytest.raises(RuntimeError, match="scored"):
        normative_made_data.score_all(tmp_path, groups, 25, 1)
    assert scored == ["healthy_001"]


def test_v2_bench_side_by_side_keeps_each_runs_place(tmp_path, monkeypatch):
    """v2.py's evaluations with --jobs 2 run two at a time and finish out of order (stand-ins that sleep): each
    model's runs still come in the order training x noise seed, as with --jobs 1, and every evaluation runs once."""
    import random
    import sys
    import threading
    import time

    from benchmarks import v2
    from benchmarks.bench.jobs import Step

    lock, running = threading.Lock(), [0]

    def stand_in_eval(work, tag, family, datalist, overrides, s, profiles=()):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(random.uniform(0.005, 0.02))
        with lock:
            running[0] -= 1
        ran.append((tag, family))
        return Path(f"{tag}_{family}"), Step(tag, 1.0, False)

    monkeypatch.setattr(v2, "make_data", lambda work, n: (tmp_path / "train.json", {f: tmp_path for f in FAMILIES}))
    monkeypatch.setattr(
        v2, "train", lambda work, name, *a, seed=0, **k: (Path(f"{name}{seed}.pt"), Step(name, 1.0, False))
    )
    monkeypatch.setattr(v2, "train_step", lambda work, name, *a, seed=0, **k: (Path(f"{name}{seed}.pt"),))
    monkeypatch.setattr(v2, "evaluate", stand_in_eval)
    monkeypatch.setattr(
        v2, "default_evaluation", lambda w, family, d, wt, k, n, *a: (Path(f"d{k}{n}_{family}"), Step("d", 1.0, True))
    )
    monkeypatch.setattr(v2, "write_report", lambda text, path: path)
    reported = []
    monkeypatch.setattr(v2, "report_text", lambda command, args, outs, *a: reported.append(outs) or [])
    for jobs in (1, 2):
        ran, peak = [], [0]
        argv = ["v2", "--work_dir", str(tmp_path), "--seeds", "3", "--train_seeds", "2", "--jobs", str(jobs)]
        monkeypatch.setattr(sys, "argv", argv)
        v2.main()
        assert sorted(ran) == sorted(set(ran)) and len(ran) == 2 * 3 * len(FAMILIES)
        assert peak[0] == jobs, f"--jobs {jobs}: {peak[0]} evaluations at once"
    assert reported[0] == reported[1]
    assert [p.name for p in reported[1]["v2 tumour"]] == [
        f"{run_tag('v2', k, n)}_tumour" for k in range(2) for n in range(3)
    ]
