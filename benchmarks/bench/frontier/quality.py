"""The AUPRC of the frontier: maps of timestep subsets (from the cache, or scored directly with a speed option),
the median filter and AUPRC over brain voxels per study, and the rows that pair a subset's AUPRC with its seconds."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench.frontier import log
from benchmarks.bench.frontier.cache import LogCache
from benchmarks.bench.frontier.networks import Network
from benchmarks.bench.frontier.studies import Study, npz_bytes, prepare
from benchmarks.bench.frontier.timing import SpeedOption
from scripts.curves import average_precision, binary_curve
from scripts.files import atomic_write_bytes
from scripts.metrics import median_filtered
from scripts.scoring import ANDiInferer

MEDIAN_FILTER = 5  # inference's default; AUPRC is also given without it


def volume_map(per_channel: np.ndarray, study: Study) -> np.ndarray:
    """Channel-max map (H, W, D) from per-channel maps (K, C, H, W) of the brain slices; other slices 0."""
    a = np.zeros(study.label.shape, np.float32)
    a[..., study.keep.numpy()] = per_channel.max(axis=1).transpose(1, 2, 0)
    return a


def auprc(a: np.ndarray, study: Study, median_filter: int) -> float:
    """AUPRC of map ``a`` (H, W, D) over the study's brain voxels after the 3D median filter."""
    a = median_filtered(a, median_filter)
    return average_precision(binary_curve(a[study.brain], study.label[study.brain]))


def auprcs(a: np.ndarray, study: Study) -> dict[int, float]:
    """AUPRC of map ``a`` without the median filter (0) and with inference's (``MEDIAN_FILTER``)."""
    return {mf: auprc(a, study, mf) for mf in (0, MEDIAN_FILTER)}


def subsets(t_lower: int, t_upper: int) -> dict[str, list[int]]:
    """The timestep subsets compared: strides over the whole range, windows from t_lower (and at stride 2), windows
    ending at t_upper."""
    full = list(range(t_lower, t_upper))
    out = {f"stride_{s}": full[::s] for s in (1, 2, 3, 4, 5, 10, 25)}
    for n in (5, 13, 25, 41, 63):
        out[f"window_{n}"] = full[:n]
    for n in (13, 25, 41):
        out[f"window_{n}_stride_2"] = full[: 2 * n : 2]
    for n in (13, 41):
        out[f"late_window_{n}"] = full[-n:]
    return out


def describe(timesteps: list[int]) -> str:
    """``first..last``, with the step when it is not 1."""
    step = timesteps[1] - timesteps[0] if len(timesteps) > 1 else 1
    return f"{timesteps[0]}..{timesteps[-1]}" + (f" step {step}" if step > 1 else "")


@dataclass
class Row:
    network: str
    subset: str
    timesteps: list[int]
    option: SpeedOption
    seconds: float
    auprc: dict[str, dict[int, float]]  # study -> median filter -> AUPRC

    @property
    def name(self) -> str:
        return f"{self.network}:{self.subset}" + ("" if self.option.key == "bf16_b4" else f":{self.option.key}")

    def mean(self, median_filter: int) -> float:
        return float(np.mean([v[median_filter] for v in self.auprc.values()]))


def auprc_key(study: str, subset: str, indices: list[int]) -> str:
    """The key of one study's AUPRC at one subset of cache indices in a figure store."""
    return f"{study}|{subset}|{indices}"


def subset_auprc(
    cache: dict[str, LogCache], studies: list[Study], subsets: dict[str, list[int]], store: Path | None = None
) -> dict[str, dict[str, dict[int, float]]]:
    """AUPRC (subset -> study -> median filter -> AUPRC) of each subset of cache indices; kept in ``store`` (a JSON
    file, keyed by study and subset), so that a report is remade without reading the cache again."""
    kept = json.loads(store.read_text()) if store and store.is_file() else {}
    out: dict[str, dict[str, dict[int, float]]] = {name: {} for name in subsets}
    for study in studies:
        todo = {n: idx for n, idx in subsets.items() if auprc_key(study.name, n, idx) not in kept}
        for name, maps in (cache[study.name].geometric_means(todo) if todo else {}).items():
            a = volume_map(maps, study)
            kept[auprc_key(study.name, name, todo[name])] = {str(mf): v for mf, v in auprcs(a, study).items()}
        if store and todo:
            atomic_write_bytes(json.dumps(kept).encode(), store)
        for name, idx in subsets.items():
            out[name][study.name] = {int(mf): v for mf, v in kept[auprc_key(study.name, name, idx)].items()}
    return out


def scored_auprc(
    option: SpeedOption, network: Network, studies: list[Study], base: ANDiInferer, timesteps: list[int], work: Path
) -> dict[str, dict[int, float]]:
    """AUPRC of maps scored directly with ``option`` at ``timesteps`` (kept in the work folder)."""
    out = {}
    inferer = option.inferer(base).at_timesteps(timesteps)
    module = option.network(network)
    for study in studies:
        path = work / "maps" / network.name / f"{option.key}_{len(timesteps)}_{study.name}.npz"
        if not path.is_file():
            with torch.inference_mode():
                maps = inferer.score_slices(study.slices(), module).numpy()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(npz_bytes(maps=maps), path)
        with np.load(path) as z:
            a = volume_map(z["maps"], study)
        out[study.name] = auprcs(a, study)
    return out


def held_out_check(
    args: argparse.Namespace, work: Path, network: Network, base: ANDiInferer, sets: dict[str, list[int]]
) -> tuple[list[Study], list[tuple[str, dict[str, dict[int, float]]]]]:
    """The old and new defaults (and ``--check_subsets``) on ``--check_n`` further studies per family, which played
    no part in choosing the new default: AUPRC per subset, from a cache of only the timesteps those subsets use."""
    studies = prepare(work, args.test_datalist, args.n_test, args.check_n, args.n_test + args.check_n)
    names = [d.split(":", 1)[1] for d in (args.old_default, args.new_default) if d.split(":")[0] == network.name]
    names = list(dict.fromkeys([*names, *(n for n in args.check_subsets.split(",") if n)]))
    timesteps = sorted({t for n in names for t in sets[n]})
    caches = {}
    for study in studies:
        path = work / "cache" / f"{network.name}_held_out" / f"{study.name}.npy"
        caches[study.name] = LogCache(path, timesteps, tuple(study.slices().shape))
        caches[study.name].fill(base, study, network)
    indices = {n: [timesteps.index(t) for t in sets[n]] for n in names}
    scores = subset_auprc(caches, studies, indices, work / f"auprc_{network.name}_held_out.json")
    return studies, list(scores.items())


def frontier_rows(
    args: argparse.Namespace,
    work: Path,
    studies: list[Study],
    networks: list[Network],
    caches: dict[str, dict[str, LogCache]],
    timing: dict[str, dict],
    options: dict[str, list[SpeedOption]],
    base: ANDiInferer,
) -> list[Row]:
    """Every row: each subset of each network at the default call (AUPRC from the cache); on the first network the
    other bf16 calls at the old and new defaults and stride 1 (the same maps), and fp32 and int8 (when int8 is faster
    than the default call) scored at ``stride_{--precision_stride}``."""
    first = networks[0]
    timesteps = list(range(args.t_lower, args.t_upper))
    n_slices = studies[0].image.shape[-1]
    rows: list[Row] = []
    default = SpeedOption(base.batch_size)
    sets = subsets(args.t_lower, args.t_upper)
    for network in networks:
        per_pair = timing[f"{network.name}|{default.key}"]["per_pair_s"]
        indices = {name: [timesteps.index(t) for t in ts] for name, ts in sets.items()}
        scores = subset_auprc(caches[network.name], studies, indices, work / f"auprc_{network.name}.json")
        for name, ts in sets.items():
            rows.append(Row(network.name, name, ts, default, per_pair * len(ts) * n_slices, scores[name]))
    by = {r.name: r for r in rows}
    for option in options[first.name]:
        if option.key == default.key:
            continue
        per_pair = timing[f"{first.name}|{option.key}"]["per_pair_s"]
        if option.precision == "bf16":  # same maps as the default call: the rows at the old and the new default
            for subset in {args.old_default.split(":")[1], args.new_default.split(":")[1], "stride_1"}:
                src = by[f"{first.name}:{subset}"]
                seconds = per_pair * len(src.timesteps) * n_slices
                rows.append(Row(first.name, subset, src.timesteps, option, seconds, src.auprc))
        elif option.precision == "int8" and per_pair >= timing[f"{first.name}|{default.key}"]["per_pair_s"]:
            log(f"{option.label}: not faster than the default call, so not scored (see the timings)")
        else:
            subset = f"stride_{args.precision_stride}"
            ts = sets[subset]
            scores = scored_auprc(option, first, studies, base, ts, work)
            rows.append(Row(first.name, subset, ts, option, per_pair * len(ts) * n_slices, scores))
    return rows
