"""The overview picture: which slices it shows, and that it renders every row."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from scripts.outputs import overview_png, overview_slices


def study(depth: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A brain widest at slice 12, a big lesion peaking at slice 20 and a small one peaking at slice 5."""
    rng = np.random.default_rng(0)
    h = w = 32
    radius = 14 - 0.6 * np.abs(np.arange(depth) - 12)
    yy, xx = np.mgrid[:h, :w]
    brain = ((yy - 16) ** 2 + (xx - 16) ** 2)[..., None] < np.maximum(radius, 0)[None, None] ** 2
    flair = brain * (1.0 + 0.1 * rng.random(brain.shape))
    a = brain * 0.1 * rng.random(brain.shape)
    a[10:18, 10:18, 17:24] = 1.0
    a[13, 13, 20] = 3.0  # the big lesion's peak
    a[20:22, 20:22, 4:7] = 2.0
    a[21, 21, 5] = 2.5
    seg = (a > 0.5).astype(np.uint8)
    return flair, a * brain, seg


def test_overview_shows_the_reference_slice_and_the_lesion_peaks():
    flair, a, seg = study()
    picks = overview_slices(flair != 0, a, seg, n_slices=5)
    assert picks[0] == (12, "reference")
    chosen = dict(picks[1:])
    assert chosen[20].startswith("component 1 (448 voxels)") and chosen[5].startswith("component 2 (12 voxels)")
    assert [k for k, _ in picks[1:]] == sorted(k for k, _ in picks[1:]) and len(picks) == 5
    assert all(abs(x - y) >= 3 for i, (x, _) in enumerate(picks[1:]) for y, _ in picks[i + 2 :])


def test_overview_without_segmentation_falls_back_to_map_peaks_and_renders_extra_rows():
    flair, a, seg = study()
    picks = overview_slices(flair != 0, a, np.zeros_like(seg), n_slices=4)
    assert [r for _, r in picks] == ["reference", "map peak", "map peak", "map peak"]
    png = overview_png(flair, a, seg, n_slices=4, extra_rows={"z-map": a * 3}, title="s1")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[1] > image.size[0] * 0.8  # four rows of slices, and colour bars
