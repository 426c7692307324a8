"""The frontier's figure: AUPRC against seconds per study."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench.frontier.quality import MEDIAN_FILTER, Row
from benchmarks.bench.settings import DATA_NOTE


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


def _family(subset: str) -> str:
    if subset.startswith("late"):
        return "late"
    if subset.startswith("window") and "stride" in subset:
        return "window_stride"
    return subset.split("_")[0]
