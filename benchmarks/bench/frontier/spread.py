"""The spread table of the frontier: AUPRC of chosen rows over noise seeds, mean ± SD, and the paired difference of
the new default against the old."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.bench.frontier import log
from benchmarks.bench.frontier.cache import LogCache, cache_path
from benchmarks.bench.frontier.networks import Network, base_inferer
from benchmarks.bench.frontier.quality import MEDIAN_FILTER, auprc_key, describe, subset_auprc, subsets
from benchmarks.bench.frontier.studies import Study
from benchmarks.bench.kept import keep_figures, restore_figures
from benchmarks.bench.report import fmt, markdown_table
from benchmarks.bench.settings import DATA_NOTE
from benchmarks.bench.spread import fmt_spread, mean_sd
from scripts.values import file_sha256


def study_digest(study: Study) -> str:
    """sha256 of a preprocessed study's image, label and brain mask: the same digest means the same test study."""
    h = hashlib.sha256()
    for array in (study.image.numpy(), study.label, study.brain):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def spread_context(args, seed: int, network: Network, studies: list[Study]) -> dict:
    """What one seed's figures of one network depend on, recorded with the figures kept beside the code
    (``--keep_dir``): the noise seed, the network's preset and weights, the test studies, the range of t."""
    weights = Path(network.weights)
    return {
        "seed": seed,
        "network": network.name,
        "preset": network.preset,
        "weights_sha256": file_sha256(weights) if weights.is_file() else str(weights),
        "studies": {s.name: study_digest(s) for s in studies},
        "t": [args.t_lower, args.t_upper],
        "median_filter": MEDIAN_FILTER,
    }


def spread(args, work: Path, studies: list[Study], networks: list[Network], caches: dict) -> str:
    """AUPRC of the ``--spread_subsets`` rows over ``--seeds`` noise seeds: mean ± SD of the per-seed means over the
    studies (median filter 5 and off), the same per study, and the paired difference of the new default against
    every other row. ``caches``:
    seed 0's full caches when the main run made them (network -> study -> LogCache). With ``args.keep_dir``, each
    study's figures are also kept in that folder (``spread_auprc_<network>_seed<seed>.json``, with what they depend
    on), so that on a fresh machine the spread goes on at the next study: a study with kept figures is not scored
    again."""
    full = list(range(args.t_lower, args.t_upper))
    sets = subsets(args.t_lower, args.t_upper)
    names = [n for n in args.spread_subsets.split(",") if n]
    wanted = sorted({t for n in names for t in sets[n]})
    per_seed: dict[str, list[dict[int, float]]] = {}  # "network:subset" -> per seed: median filter -> mean AUPRC
    per_study: dict[str, dict[str, list[float]]] = {}  # "network:subset" -> study -> AUPRC at MF 5 per seed
    keep_dir = getattr(args, "keep_dir", None)
    for seed in range(args.seeds):
        base = base_inferer(seed)
        for network in networks:
            own = caches.get(network.name, {}) if seed == 0 else {}
            timesteps = own[studies[0].name].timesteps if own else wanted
            indices = {n: [timesteps.index(t) for t in sets[n]] for n in names}
            store = work / f"spread_auprc_{network.name}_seed{seed}.json"
            kept = Path(keep_dir) / store.name if keep_dir else None
            context = spread_context(args, seed, network, studies) if kept else {}
            if kept and (n_back := restore_figures(store, kept, context)):
                log(f"seed {seed} {network.name}: {n_back} figures kept in {kept}")
            cache = {}
            for study in studies:  # each study's figures are stored (and kept) as soon as they are made
                done = json.loads(store.read_text()) if store.is_file() else {}
                if all(auprc_key(study.name, n, idx) in done for n, idx in indices.items()):
                    continue  # its maps are not needed again
                if study.name in own:
                    cache[study.name] = own[study.name]
                else:
                    path = cache_path(work, seed, network.name, study.name, wanted, full)
                    cache[study.name] = LogCache(path, wanted, tuple(study.slices().shape))
                    cache[study.name].fill(base, study, network)
                subset_auprc(cache, [study], indices, store)
                if kept:
                    keep_figures(store, kept, context)
            scores = subset_auprc(cache, studies, indices, store)
            for n in names:
                means = {mf: float(np.mean([v[mf] for v in scores[n].values()])) for mf in (MEDIAN_FILTER, 0)}
                per_seed.setdefault(f"{network.name}:{n}", []).append(means)
                for study in studies:
                    per_study.setdefault(f"{network.name}:{n}", {}).setdefault(study.name, []).append(
                        scores[n][study.name][MEDIAN_FILTER]
                    )
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
    text += [
        f"Per study, AUPRC at MF {MEDIAN_FILTER}, mean ± SD over the {args.seeds} seeds:",
        "",
        markdown_table(
            ["row", *[s.name for s in studies]],
            [[key, *[fmt_spread(by_study[s.name]) for s in studies]] for key, by_study in per_study.items()],
        ),
    ]
    text += paired_lines(per_seed, args.new_default)
    return "\n".join(text) + "\n"


def paired_lines(per_seed: dict[str, list[dict[int, float]]], new: str) -> list[str]:
    """The paired difference (by seed) of the row ``new`` against every other row of its network, at MF 5 and off:
    mean ± SD over the seeds, and the paired t-test's two-sided p (n - 1 degrees of freedom; with 3 seeds a
    difference must be about 4.3 standard errors from 0 for p < 0.05)."""
    lines = []
    if new not in per_seed:
        return lines
    for other in [k for k in per_seed if k != new and k.split(":")[0] == new.split(":")[0]]:
        for mf in (MEDIAN_FILTER, 0):
            diffs = [a[mf] - b[mf] for a, b in zip(per_seed[new], per_seed[other], strict=True)]
            mean, sd = mean_sd(diffs)
            line = (
                f"- {new} minus {other} (paired by seed), MF {mf or 'off'}: {fmt_spread(diffs)} over {len(diffs)} seeds"
            )
            if np.isfinite(sd) and sd > 0:
                p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
                verdict = "told apart from noise" if p < 0.05 else "not told apart from noise"
                line += f", paired t-test p = {p:.2g}: {verdict} (at p < 0.05)"
            else:
                line += ": too few seeds for a test"
            lines.append(line)
    return lines
