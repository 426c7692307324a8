"""The frontier's Markdown: where the defaults stand against the goals, the frontier table, the timings and the
held-out check."""

from __future__ import annotations

import numpy as np

from benchmarks.bench.frontier.networks import Network
from benchmarks.bench.frontier.quality import MEDIAN_FILTER, Row, describe, subsets
from benchmarks.bench.frontier.studies import Study
from benchmarks.bench.report import fmt, markdown_table, printed_by
from benchmarks.bench.settings import DATA_NOTE


def thread_counts(timing: dict) -> str:
    """The torch threads the timings ran with (one number, or each one if they differ)."""
    return "/".join(str(n) for n in sorted({t["threads"] for t in timing.values()}))


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
        f"{printed_by('benchmarks.frontier')}. Every "
        f"AUPRC is measured on **{DATA_NOTE}**: {len(studies)} made test studies ({', '.join(names)}; 240 x 240 x "
        "155 at 1 mm, preprocessed by inference's configs to 128 x 128 x 155), AUPRC over brain voxels per study, "
        "then the mean. Networks: "
        + "; ".join(f"{n.name} = preset `{n.preset}` ({n.parameters:,} parameters, `{n.weights}`)" for n in networks)
        + f". Seconds: scoring only, {studies[0].image.shape[-1]} slices per study (inference's default voxel set "
        f"scores every slice), from the timings below (median of {args.repeats}, {thread_counts(timing)} threads).",
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
