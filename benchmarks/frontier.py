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
stride 5 and stride 1) as mean ± SD over the seeds, with the paired difference of the new default against the old;
``--spread_only`` does only that (no timing), filling caches with just those rows' timesteps. The networks are given
(``--networks``), so a spread over trainings is taken by listing several trainings of one preset there.

The test studies are MADE (synthetic) data (``scripts.synthetic``: ``--n_test`` per lesion family, 240 x 240 x 155
at 1 mm, seed 7 as ``benchmarks/faithful.py``), and so is every AUPRC here. Results go to ``<work_dir>/frontier.md``
and ``frontier.png`` (``--doc``: into bundle/docs); the cache and the timings are kept, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from benchmarks import REPO
from benchmarks.bench.configs import parsed
from benchmarks.bench.report import fmt, markdown_table
from benchmarks.bench.settings import DATA_NOTE
from benchmarks.bench.spread import fmt_spread, mean_sd
from benchmarks.faithful import FAMILIES  # its test set
from scripts.checkpoints import load_network
from scripts.files import atomic_write_bytes
from scripts.intensity import brain_mask
from scripts.metrics import average_precision, binary_curve, median_filtered
from scripts.networks import make_network
from scripts.scoring import ANDiInferer
from scripts.slices import brain_slices
from scripts.synthetic import make_dataset

MEDIAN_FILTER = 5  # inference's default; AUPRC is also given without it


def log(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------------------------------------- data


@dataclass
class Study:
    """One preprocessed test study: image (C, H, W, D) on the scoring grid, its label and brain (H, W, D)."""

    name: str
    image: torch.Tensor
    label: np.ndarray
    brain: np.ndarray

    @cached_property
    def keep(self) -> torch.Tensor:
        """Indices of the axial slices that hold brain (those the cache scores)."""
        return brain_slices(self.image)

    def slices(self) -> torch.Tensor:
        """The brain slices x_0 (K, C, H, W) float32, on the preprocessed image's scale."""
        return self.image[..., self.keep].permute(3, 0, 1, 2).contiguous().float()


def prepare(work: Path, datalist: Path | None, start: int, count: int, n_made: int) -> list[Study]:
    """Studies ``start .. start + count - 1`` of each family of the made test set ``datalist`` (made with ``n_made``
    per family when not given), preprocessed once by inference's configured preprocessing."""
    if datalist is None:
        datalist = work / "data" / "test" / "datalist.json"
        if not datalist.is_file():
            make_dataset(datalist.parent, n_healthy=0, n_anomalous=n_made, lesion=list(FAMILIES), seed=7)
    items = json.loads(datalist.read_text())["testing"]
    items = [i for f in FAMILIES for i in [j for j in items if j["name"].startswith(f + "_")][start : start + count]]
    preprocessing = None
    studies = []
    for item in items:
        path = work / "prepared" / f"{item['name']}.npz"
        if not path.is_file():
            preprocessing = preprocessing or parsed("preprocessing", ["inference.yaml"])
            study = {k: (v if k == "name" else str(datalist.parent / v)) for k, v in item.items()}
            data = preprocessing(study)
            image = data["image"].float()
            buf = _npz(
                image=image.numpy(),
                label=data["label"][0].numpy() > 0.5,
                brain=brain_mask(image)[0].numpy(),
            )
            atomic_write_bytes(buf, path)
        with np.load(path) as z:
            image = torch.from_numpy(z["image"])
            studies.append(Study(item["name"], image, z["label"], z["brain"]))
    return studies


def _npz(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------ networks


@dataclass
class Network:
    """A network of the comparison: ``name``, its ``preset`` and the weights file (trained at the demo budget)."""

    name: str
    weights: Path
    preset: str
    module: torch.nn.Module = field(init=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Network:
        """``name=weights:preset``."""
        name, rest = spec.split("=", 1)
        weights, preset = rest.rsplit(":", 1)
        return cls(name, Path(weights), preset)

    def load(self) -> Network:
        net = make_network(self.preset)
        load_network(net, self.weights)
        self.module = net.eval()
        self.parameters = sum(p.numel() for p in net.parameters())
        return self


def base_inferer(seed: int = 0) -> ANDiInferer:
    """Inference's configured inferer (brain slices; bf16 ``amp: auto``, pairs per call of a CPU) at noise ``seed``."""
    return parsed("inferer", ["inference.yaml"], voxel_set="brain", seed=seed)


def cache_path(work: Path, seed: int, network: str, study: str, timesteps: list[int], full: list[int]) -> Path:
    """Where the log d_t of one seed, network and study are kept: the full range's cache, or one per other list."""
    tag = "" if timesteps == full else f"_{len(timesteps)}t_{abs(hash(tuple(timesteps))) % 10**8:08d}"
    return work / "cache" / f"seed{seed}" / network / f"{study}{tag}.npy"


# --------------------------------------------------------------------------------------------------------- cache


class LogCache:
    """log d_t (n_t, K, C, H, W) float16 of one study and network on disk, filled one timestep after another; a
    side file records how many are done, so a stopped run resumes where it stopped."""

    def __init__(self, path: Path, timesteps: list[int], shape: tuple[int, ...]) -> None:
        self.path, self.timesteps, self.shape = path, timesteps, (len(timesteps), *shape)
        self.state = path.with_suffix(".json")
        self.done = 0
        if self.state.is_file():
            state = json.loads(self.state.read_text())
            if state["timesteps"] == timesteps and tuple(state["shape"]) == self.shape:
                self.done = int(state["done"])
        mode = "r+" if self.done and path.is_file() else "w+"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=self.shape)

    def fill(self, inferer: ANDiInferer, study: Study, network: Network) -> None:
        x_0 = study.slices()
        key = inferer.study_key(study.image) if inferer.study_noise else None  # inference's noise for this study
        start, n = time.perf_counter(), len(self.timesteps)
        for i in range(self.done, n):
            with torch.inference_mode():
                d_t = inferer.at_timesteps([self.timesteps[i]]).score_slices(x_0, network.module, study=key)
            self.array[i] = d_t.clamp_min(inferer.log_floor).log().numpy().astype(np.float16)
            self.array.flush()
            self.done = i + 1
            state = {"timesteps": self.timesteps, "shape": list(self.shape), "done": self.done}
            atomic_write_bytes(json.dumps(state).encode(), self.state)
            if self.done % 25 == 0 or self.done == n:
                log(f"  {network.name} {study.name}: {self.done}/{n} timesteps ({time.perf_counter() - start:.0f} s)")

    def geometric_means(self, subsets: dict[str, list[int]]) -> dict[str, np.ndarray]:
        """exp(mean of log d_t over each subset's indices): per-channel maps (K, C, H, W) float32 per subset, in one
        pass over the cache (each timestep is read once)."""
        acc = {name: np.zeros(self.shape[1:], np.float32) for name in subsets}
        for i in sorted({i for idx in subsets.values() for i in idx}):
            log_d = self.array[i].astype(np.float32)
            for name, idx in subsets.items():
                if i in idx:
                    acc[name] += log_d
        return {name: np.exp(acc[name] / len(idx)) for name, idx in subsets.items()}


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


# -------------------------------------------------------------------------------------------------------- timing


@dataclass
class SpeedOption:
    """How a network call is made: pairs per call, precision ("bf16", "fp32", "int8") and ``torch.compile``."""

    pairs_per_call: int
    precision: str = "bf16"
    compile: bool = False

    @property
    def key(self) -> str:
        return f"{self.precision}_b{self.pairs_per_call}" + ("_compiled" if self.compile else "")

    @property
    def label(self) -> str:
        return f"{self.precision}, {self.pairs_per_call}/call" + (", compiled" if self.compile else "")

    def inferer(self, base: ANDiInferer) -> ANDiInferer:
        return ANDiInferer(
            base.scheduler,
            batch_size=self.pairs_per_call,
            amp=self.precision == "bf16",
            compile=self.compile,
            diffusion_range=base.diffusion_range,
            seed=base.seed,
            log_floor=base.log_floor,
        )

    def network(self, network: Network) -> torch.nn.Module:
        if self.precision != "int8":
            return network.module
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(network.module, {torch.nn.Linear}, dtype=torch.qint8)


def time_option(option: SpeedOption, network: Network, study: Study, base: ANDiInferer, args) -> dict:
    """Median seconds per slice-timestep pair of ``option`` (and the first call's seconds, compilation included)."""
    x_0 = study.slices()
    inferer = option.inferer(base).at_timesteps(base.timesteps[: args.probe_timesteps])
    module = option.network(network)
    pairs = x_0.shape[0] * args.probe_timesteps
    times = []
    for _ in range(args.repeats + 1):  # the first call warms up (and compiles)
        start = time.perf_counter()
        with torch.inference_mode():
            inferer.score_slices(x_0, module)
        times.append(time.perf_counter() - start)
    return {
        "per_pair_s": statistics.median(times[1:]) / pairs,
        "first_call_s": times[0],
        "pairs": pairs,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------- rows


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


def subset_auprc(
    cache: dict[str, LogCache], studies: list[Study], subsets: dict[str, list[int]], store: Path | None = None
) -> dict[str, dict[str, dict[int, float]]]:
    """AUPRC (subset -> study -> median filter -> AUPRC) of each subset of cache indices; kept in ``store`` (a JSON
    file, keyed by study and subset), so that a report is remade without reading the cache again."""
    kept = json.loads(store.read_text()) if store and store.is_file() else {}
    out: dict[str, dict[str, dict[int, float]]] = {name: {} for name in subsets}
    for study in studies:
        todo = {n: idx for n, idx in subsets.items() if f"{study.name}|{n}|{idx}" not in kept}
        for name, maps in (cache[study.name].geometric_means(todo) if todo else {}).items():
            a = volume_map(maps, study)
            kept[f"{study.name}|{name}|{todo[name]}"] = {str(mf): v for mf, v in auprcs(a, study).items()}
        if store and todo:
            atomic_write_bytes(json.dumps(kept).encode(), store)
        for name, idx in subsets.items():
            out[name][study.name] = {int(mf): v for mf, v in kept[f"{study.name}|{name}|{idx}"].items()}
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
            atomic_write_bytes(_npz(maps=maps), path)
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


# -------------------------------------------------------------------------------------------------------- report


def spread(args, work: Path, studies: list[Study], networks: list[Network], caches: dict) -> str:
    """AUPRC of the ``--spread_subsets`` rows over ``--seeds`` noise seeds: mean ± SD of the per-seed means over the
    studies (median filter 5 and off), and the paired difference of the new default against the old. ``caches``:
    seed 0's full caches when the main run made them (network -> study -> LogCache)."""
    full = list(range(args.t_lower, args.t_upper))
    sets = subsets(args.t_lower, args.t_upper)
    names = [n for n in args.spread_subsets.split(",") if n]
    wanted = sorted({t for n in names for t in sets[n]})
    per_seed: dict[str, list[dict[int, float]]] = {}  # "network:subset" -> per seed: median filter -> mean AUPRC
    for seed in range(args.seeds):
        base = base_inferer(seed)
        for network in networks:
            own = caches.get(network.name, {}) if seed == 0 else {}
            cache = {}
            for study in studies:
                if study.name in own:
                    cache[study.name] = own[study.name]
                    continue
                path = cache_path(work, seed, network.name, study.name, wanted, full)
                cache[study.name] = LogCache(path, wanted, tuple(study.slices().shape))
                cache[study.name].fill(base, study, network)
            indices = {n: [cache[studies[0].name].timesteps.index(t) for t in sets[n]] for n in names}
            store = work / f"spread_auprc_{network.name}_seed{seed}.json"
            scores = subset_auprc(cache, studies, indices, store)
            for n in names:
                means = {mf: float(np.mean([v[mf] for v in scores[n].values()])) for mf in (MEDIAN_FILTER, 0)}
                per_seed.setdefault(f"{network.name}:{n}", []).append(means)
            log(
                f"seed {seed} {network.name}: "
                + ", ".join(f"{n} {per_seed[f'{network.name}:{n}'][-1][MEDIAN_FILTER]:.3f}" for n in names)
            )
    rows = []
    for key, runs in per_seed.items():
        subset = key.split(":")[1]
        rows.append(
            [
                key,
                f"{describe(sets[subset])} ({len(sets[subset])})",
                ", ".join(fmt(r[MEDIAN_FILTER]) for r in runs),
                fmt_spread([r[MEDIAN_FILTER] for r in runs]),
                fmt_spread([r[0] for r in runs]),
            ]
        )
    text = [
        f"## Spread over noise seeds ({DATA_NOTE})",
        "",
        f"{args.seeds} noise seeds (0 .. {args.seeds - 1}; each study its own noise per (seed, study, t), as inference "
        f"draws it); per seed the mean AUPRC over the {len(studies)} made studies "
        f"({', '.join(s.name for s in studies)}); "
        "then mean ± SD (sample SD) over the seeds.",
        "",
        markdown_table(
            ["row", "timesteps", f"AUPRC MF {MEDIAN_FILTER} per seed", f"AUPRC MF {MEDIAN_FILTER}", "AUPRC MF off"],
            rows,
        ),
    ]
    new, old = args.new_default, args.old_default
    if new in per_seed and old in per_seed:
        for mf in (MEDIAN_FILTER, 0):
            diffs = [a[mf] - b[mf] for a, b in zip(per_seed[new], per_seed[old], strict=True)]
            mean, sd = mean_sd(diffs)
            noise = not np.isfinite(sd) or abs(mean) <= 2 * sd / np.sqrt(len(diffs))
            text.append(
                f"- {new} minus {old} (paired by seed), MF {mf or 'off'}: {fmt_spread(diffs)} over {len(diffs)} seeds: "
                + (
                    "within two standard errors of 0, not told apart from noise"
                    if noise
                    else "beyond two standard errors"
                )
            )
    return "\n".join(text) + "\n"


def plot(rows: list[Row], marks: dict[str, str], path: Path, threads: str) -> None:
    """Two panels, AUPRC with inference's median filter and without, against seconds per study (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharex=True)
    styles = {"stride": "o-", "window": "s-", "window_stride": "^--", "late": "v:"}
    for ax, mf in zip(axes, (MEDIAN_FILTER, 0), strict=True):
        for network in dict.fromkeys(r.network for r in rows):
            for family, style in styles.items():
                sel = [r for r in rows if r.network == network and r.option.key == "bf16_b4"]
                sel = sorted((r for r in sel if _family(r.subset) == family), key=lambda r: r.seconds)
                if sel:
                    label = f"{network}: {family.replace('_', ' at ')}"
                    ax.plot([r.seconds for r in sel], [r.mean(mf) for r in sel], style, label=label, alpha=0.8)
        other = [r for r in rows if r.option.key != "bf16_b4"]
        ax.plot([r.seconds for r in other], [r.mean(mf) for r in other], "x", color="grey", label="another call")
        for name, text in marks.items():
            r = next(r for r in rows if r.name == name)
            ax.plot(r.seconds, r.mean(mf), "*", markersize=16, color="k" if "old" in text else "red")
            ax.annotate(text, (r.seconds, r.mean(mf)), xytext=(6, -12), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"scoring seconds per study on this CPU ({threads} threads; log scale)")
        ax.set_ylabel(f"AUPRC, mean over the test studies ({f'median filter {mf}' if mf else 'no median filter'})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"ANDi on {DATA_NOTE}: quality per second ('another call': pairs per call, torch.compile or fp32)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _threads(timing: dict) -> str:
    """The torch threads the timings ran with (one number, or each one if they differ)."""
    return "/".join(str(n) for n in sorted({t["threads"] for t in timing.values()}))


def _family(subset: str) -> str:
    if subset.startswith("late"):
        return "late"
    if subset.startswith("window") and "stride" in subset:
        return "window_stride"
    return subset.split("_")[0]


def goal_lines(rows: list[Row], old: str, new: str, reference: str) -> list[str]:
    """Where the new CPU default stands against the two goals of issue 13."""
    by = {r.name: r for r in rows}
    ref, o, n = by[reference], by[old], by[new]
    gap = n.mean(MEDIAN_FILTER) - ref.mean(MEDIAN_FILTER)
    gain = n.mean(MEDIAN_FILTER) - o.mean(MEDIAN_FILTER)
    gap0 = n.mean(0) - ref.mean(0)
    return [
        f"- reference (stride 1, {reference}): AUPRC {ref.mean(MEDIAN_FILTER):.3f} (MF {MEDIAN_FILTER}), "
        f"{ref.mean(0):.3f} (no filter), {ref.seconds:.0f} s per study",
        f"- old CPU default ({old}): AUPRC {o.mean(MEDIAN_FILTER):.3f} / {o.mean(0):.3f}, {o.seconds:.0f} s",
        f"- new CPU default ({new}): AUPRC {n.mean(MEDIAN_FILTER):.3f} / {n.mean(0):.3f}, {n.seconds:.0f} s",
        f"- goal 1 (within 0.02 of stride 1 in at most a third of its time): AUPRC {gap:+.3f} (MF {MEDIAN_FILTER}), "
        f"{gap0:+.3f} (no filter) at {n.seconds / ref.seconds:.2f} of its seconds: "
        + ("met" if gap >= -0.02 and n.seconds <= ref.seconds / 3 else "not met"),
        f"- goal 2 (clearly better than stride 10 at its time): AUPRC {gain:+.3f} at "
        f"{n.seconds / o.seconds:.2f} of its seconds",
    ]


def report(rows: list[Row], studies: list[Study], networks: list[Network], timing: dict, args, goals, check) -> str:
    names = [s.name for s in studies]
    header = ["row", "network", "timesteps", "n_t", "call", "s / study", f"AUPRC MF{MEDIAN_FILTER}", "AUPRC off"]
    header += [f"{n} MF{MEDIAN_FILTER}" for n in names]
    table = []
    for r in sorted(rows, key=lambda r: (r.network, r.seconds)):
        cells = [r.name, r.network, describe(r.timesteps), str(len(r.timesteps)), r.option.label]
        cells += [f"{r.seconds:.0f}", fmt(r.mean(MEDIAN_FILTER)), fmt(r.mean(0))]
        cells += [fmt(r.auprc[n][MEDIAN_FILTER]) for n in names]
        table.append(cells)
    speed = [["network", "option", "ms per pair", "first call (s)", "pairs timed", "threads"]]
    for key, t in timing.items():
        net, opt = key.split("|")
        speed.append([net, opt, f"{1000 * t['per_pair_s']:.2f}", f"{t['first_call_s']:.1f}", t["pairs"], t["threads"]])
    text = [
        f"# ANDi quality per second on this CPU ({DATA_NOTE})",
        "",
        f"Printed by `python -m benchmarks.frontier {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}). Every "
        f"AUPRC is measured on **{DATA_NOTE}**: {len(studies)} made test studies ({', '.join(names)}; 240 x 240 x "
        "155 at 1 mm, preprocessed by inference's configs to 128 x 128 x 155), AUPRC over brain voxels per study, "
        "then the mean. Networks: "
        + "; ".join(f"{n.name} = preset `{n.preset}` ({n.parameters:,} parameters, `{n.weights}`)" for n in networks)
        + f". Seconds: scoring only, {studies[0].image.shape[-1]} slices per study (inference's default voxel set "
        f"scores every slice), from the timings below (median of {args.repeats}, {_threads(timing)} threads).",
        "",
        "## Where the defaults stand",
        "",
        *goals,
        "",
        "## Frontier",
        "",
        f"![frontier](images/frontier_made_data.png) ({DATA_NOTE})",
        "",
        markdown_table(header, table),
        "Rows with the same timesteps and network but another call (pairs per call, `torch.compile`) score the same "
        "maps (the scoring noise of t does not depend on the chunking); the fp32 row (and int8, where it is faster "
        f"than the default call) is scored at `stride_{args.precision_stride}`, where its maps differ.",
        "",
        "## Seconds per slice-timestep pair",
        "",
        markdown_table(speed[0], speed[1:]),
    ]
    if check:
        held, results = check
        header = ["subset (first network)", "timesteps", "n_t", f"AUPRC MF{MEDIAN_FILTER}", "AUPRC off"]
        header += [f"{s.name} MF{MEDIAN_FILTER}" for s in held]
        table = []
        for name, scores in results:
            ts = subsets(args.t_lower, args.t_upper)[name]
            means = [float(np.mean([v[mf] for v in scores.values()])) for mf in (MEDIAN_FILTER, 0)]
            table.append([name, describe(ts), len(ts), *map(fmt, means)])
            table[-1] += [fmt(scores[s.name][MEDIAN_FILTER]) for s in held]
        text += [
            "",
            "## Held-out check",
            "",
            f"The same rows on {len(held)} further made studies, which played no part in choosing the new default "
            f"({DATA_NOTE}):",
            "",
            markdown_table(header, table),
        ]
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--doc", action="store_true", help="copy the report and plot into bundle/docs")
    p.add_argument("--seeds", type=int, default=1, help="noise seeds of the spread table (0 .. N-1)")
    p.add_argument("--spread_subsets", default="window_13,stride_10,stride_5,stride_1", help="rows given with spread")
    p.add_argument("--spread_only", action="store_true", help="only the spread table (spread.md), no timing")
    args = p.parse_args()
    os.environ["ANDI_PROGRESS"] = "0"  # the inferer's bar per timestep would bury the log
    work = args.work_dir
    torch.manual_seed(0)
    studies = prepare(work, args.test_datalist, 0, args.n_test, args.n_test + args.check_n)
    networks = [Network.parse(s).load() for s in args.networks.split(",")]
    base = base_inferer()
    timesteps = list(range(args.t_lower, args.t_upper))
    log(f"{len(studies)} made studies; {len(timesteps)} timesteps; networks {[n.name for n in networks]}")
    if args.spread_only:
        text = spread(args, work, studies, networks, {})
        atomic_write_bytes(text.encode(), work / "spread.md")
        log(text)
        return

    caches: dict[str, dict[str, LogCache]] = {}
    for network in networks:
        caches[network.name] = {}
        for study in studies:
            if args.cache_only and args.only and study.name not in args.only.split(","):
                continue
            shape = tuple(study.slices().shape)
            cache = LogCache(cache_path(work, 0, network.name, study.name, timesteps, timesteps), timesteps, shape)
            cache.fill(base, study, network)
            caches[network.name][study.name] = cache
    if args.cache_only:
        return

    timing_path = work / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    first = networks[0]
    options = {first.name: [SpeedOption(int(b)) for b in args.pairs_per_call.split(",")]}
    options[first.name] += [SpeedOption(base.batch_size, "fp32"), SpeedOption(base.batch_size, "int8")]
    if not args.no_compile:
        options[first.name].append(SpeedOption(base.batch_size, compile=True))
    for network in networks[1:]:
        options[network.name] = [SpeedOption(base.batch_size)]
    for network in networks:
        for option in options[network.name]:
            key = f"{network.name}|{option.key}"
            if key not in timing:
                timing[key] = time_option(option, network, studies[0], base, args)
                atomic_write_bytes(json.dumps(timing, indent=1).encode(), timing_path)
            log(f"timing {key}: {1000 * timing[key]['per_pair_s']:.2f} ms per pair")

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

    goals = goal_lines(rows, args.old_default, args.new_default, f"{first.name}:stride_1")
    check = held_out_check(args, work, first, base, sets) if args.check_n else None
    if check:
        for name, scores in check[1]:
            mean = float(np.mean([v[MEDIAN_FILTER] for v in scores.values()]))
            goals.append(f"- held out ({len(check[0])} further studies): {name} AUPRC {mean:.3f} (MF {MEDIAN_FILTER})")
    for line in goals:
        log(line)
    text = report(rows, studies, networks, timing, args, goals, check)
    if args.seeds > 1:
        text += "\n" + spread(args, work, studies, networks, caches)
    atomic_write_bytes(text.encode(), work / "frontier.md")
    marks = {args.old_default: "old CPU default", args.new_default: "new CPU default"}
    plot(rows, marks, work / "frontier.png", _threads(timing))
    log(f"wrote {work / 'frontier.md'} and {work / 'frontier.png'}")
    if args.doc:
        shutil.copyfile(work / "frontier.md", REPO / "bundle" / "docs" / "frontier_made_data.md")
        shutil.copyfile(work / "frontier.png", REPO / "bundle" / "docs" / "images" / "frontier_made_data.png")
    new, old = by[args.new_default], by[args.old_default]
    print(
        f"new_default={args.new_default} auprc={new.mean(MEDIAN_FILTER):.4f} seconds={new.seconds:.1f} "
        f"old_default={args.old_default} auprc={old.mean(MEDIAN_FILTER):.4f} seconds={old.seconds:.1f} "
        f"stride_1 auprc={by[first.name + ':stride_1'].mean(MEDIAN_FILTER):.4f}"
    )


if __name__ == "__main__":
    main()
