"""Channel reduction, median filter, Yen threshold plus dilation."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage
from skimage.filters import threshold_yen
from skimage.morphology import ball

from scripts.postprocess import (
    MaskOutsideBraind,
    MedianFilter,
    ReduceChannels,
    ReduceChannelsd,
    ThresholdSegmentd,
    yen_segmentation,
)


def test_reduce_channels():
    a = torch.arange(2 * 3 * 3 * 2, dtype=torch.float32).view(2, 3, 3, 2)
    torch.testing.assert_close(ReduceChannels("max")(a), a[1:2])
    torch.testing.assert_close(ReduceChannels("mean")(a), a.mean(0, keepdim=True))
    with pytest.raises(ValueError):
        ReduceChannels("min")


@pytest.mark.parametrize("mode", ["max", "mean", "weighted"])
def test_reduce_channels_release_frees_the_per_channel_map(mode):
    """Planted bugs: "releases the reduced map" (its values would be gone) and "never releases" (the inferer's
    per-channel maps stay held through every later post step, as the engine keeps them). The reduced map equals the
    one made without release; the per-channel map's storage, which the engine's output still shares, is emptied."""
    torch.manual_seed(0)
    batch = MetaTensor(torch.rand(1, 4, 6, 5, 3))  # the inferer's output, as the engine holds it
    item = batch[0]  # the decollated view the post-processing gets
    options = {"keys": "pred", "mode": mode, "weights": {"max": 0.2, "mean": 0.5, "flair": 0.3}}
    kept = ReduceChannelsd(**options)({"pred": item.clone()})["pred"]
    reduced = ReduceChannelsd(**options, release=True)({"pred": item})["pred"]
    torch.testing.assert_close(reduced, kept, rtol=0, atol=0)
    assert batch.untyped_storage().nbytes() == 0
    assert reduced.untyped_storage().nbytes() == reduced.numel() * 4
    alone = torch.rand(1, 6, 5, 3)  # one channel: max returns a new map; the input alone is freed
    out = ReduceChannelsd(keys="pred", release=True)({"pred": alone})["pred"]
    assert out.untyped_storage().nbytes() == out.numel() * 4


def test_reduce_channels_release_keeps_a_map_that_is_a_view_of_the_image():
    """Planted bug: "frees storage another item shares" (an inferer whose map is the image itself, e.g. a baseline
    that returns a view of its input: the image would be emptied under the later steps)."""
    image = torch.rand(2, 6, 5, 3)
    out = ReduceChannelsd(keys="pred", release=True)({"pred": image[:1], "image": image})
    assert image.untyped_storage().nbytes() == image.numel() * 4
    torch.testing.assert_close(out["pred"], image[:1])


def test_median_filter_removes_a_lone_voxel_and_keeps_a_block():
    a = torch.zeros((1, 12, 12, 12))
    a[0, 2, 2, 2] = 10.0
    a[0, 5:10, 5:10, 5:10] = 1.0
    out = MedianFilter(3)(a)
    assert out[0, 2, 2, 2] == 0
    assert torch.all(out[0, 6:9, 6:9, 6:9] == 1)
    assert MedianFilter(0)(a) is a
    with pytest.raises(ValueError):
        MedianFilter(-1)
    even = MedianFilter(4)(a)  # the authors' later size: scipy's even window
    assert np.array_equal(even[0].numpy(), ndimage.median_filter(a[0].numpy(), size=4, mode="reflect"))


def test_median_filter_is_scipys_with_the_authors_border_rule():
    """The authors' median_filter_3D is scipy's with its default border (reflect); MONAI's MedianSmooth, which the
    bundle used before, replicates the border voxels: the two agree inside, and differ only at the volume's edge."""
    from monai.transforms import MedianSmooth
    from scipy import ndimage

    a = torch.rand((2, 16, 14, 12), generator=torch.Generator().manual_seed(0))
    out = MedianFilter(5)(a)
    for c in range(2):
        np.testing.assert_array_equal(out[c].numpy(), ndimage.median_filter(a[c].numpy(), size=5))
    monai = MedianSmooth(radius=2)(a)
    torch.testing.assert_close(out[:, 2:-2, 2:-2, 2:-2], monai[:, 2:-2, 2:-2, 2:-2])
    assert MedianFilter(5, mode="nearest")(a).allclose(monai)


def test_yen_and_dilation_on_a_known_image():
    a = np.ones((20, 20, 20), np.float32)
    a[8:12, 8:12, 8:12] = 5.0  # a bright cube on a flat background
    mask = np.ones_like(a, dtype=bool)
    seg, thr = yen_segmentation(a, mask, dilation_radius=1)
    assert thr == pytest.approx(threshold_yen(a.ravel()))
    assert 1.0 <= thr < 5.0
    # the cube, grown by one voxel along the 6-neighbourhood, nothing else
    expected = np.zeros_like(seg)
    expected[8:12, 8:12, 8:12] = 1
    expected[7, 8:12, 8:12] = expected[12, 8:12, 8:12] = 1
    expected[8:12, 7, 8:12] = expected[8:12, 12, 8:12] = 1
    expected[8:12, 8:12, 7] = expected[8:12, 8:12, 12] = 1
    np.testing.assert_array_equal(seg, expected)
    assert seg.dtype == np.uint8
    seg0, _ = yen_segmentation(a, mask, dilation_radius=0)
    assert seg0.sum() == 64


def test_yen_on_a_noisy_image_matches_skimage_then_dilation():
    a = np.random.default_rng(0).normal(1.0, 0.05, (20, 20, 20)).astype(np.float32)
    a[6:14, 6:14, 6:14] += 2.0
    seg, thr = yen_segmentation(a, None, dilation_radius=1)
    assert thr == pytest.approx(threshold_yen(a.ravel()))
    expected = ndimage.binary_dilation(a > threshold_yen(a.ravel()), structure=ball(1))
    np.testing.assert_array_equal(seg, expected.astype(np.uint8))
    assert seg[6:14, 6:14, 6:14].all()


def test_yen_is_computed_inside_the_mask_and_result_kept_inside():
    a = np.zeros((10, 10, 10), np.float32)
    a[2:8, 2:8, 2:8] = np.random.default_rng(1).normal(1, 0.05, (6, 6, 6))
    a[4:6, 4:6, 4:6] = 3.0
    mask = a > 0
    seg, _ = yen_segmentation(a, mask)
    assert seg[~mask].sum() == 0
    assert seg[4:6, 4:6, 4:6].all()


def test_dict_version_writes_seg_and_threshold():
    img = torch.zeros((4, 10, 10, 10))
    img[:, 2:8, 2:8, 2:8] = 1.0
    pred = torch.rand((1, 10, 10, 10)) * 0.1
    pred[0, 4:6, 4:6, 4:6] = 1.0
    d = ThresholdSegmentd(keys="pred", image_key="image", dilation_radius=0)(
        {"pred": pred * (img[:1] > 0), "image": img}
    )
    assert d["seg"].shape == (1, 10, 10, 10)
    assert d["seg"][0, 4:6, 4:6, 4:6].all()
    info = d["seg_info"]
    assert info["rule"] == "yen" and info["voxel_set"] == "brain" and not info["rejected"]
    assert info["brain_fraction"] == pytest.approx(float(d["seg"].sum()) / float((img[0] > 0).sum()))
    assert 0 < info["threshold"] < 1.0


def test_volume_voxel_set_thresholds_every_voxel_and_does_not_cut_to_the_brain():
    a = np.full((10, 10, 10), 0.05, np.float32)
    a[2:8, 2:8, 2:8] = np.random.default_rng(1).normal(1, 0.05, (6, 6, 6))
    a[4:6, 4:6, 4:6] = 3.0
    mask = a > 0.5
    seg, thr = yen_segmentation(a, mask, dilation_radius=0, voxel_set="volume")
    assert thr == pytest.approx(threshold_yen(a.ravel()))
    seg_brain, thr_brain = yen_segmentation(a, mask, dilation_radius=0, voxel_set="brain")
    assert thr_brain == pytest.approx(threshold_yen(a[mask]))
    assert not seg_brain[~mask].any()
    with pytest.raises(ValueError, match="voxel_set"):
        yen_segmentation(a, mask, voxel_set="slab")


def test_guard_writes_an_empty_segmentation_and_says_why(caplog):
    img = torch.ones((4, 10, 10, 10))
    pred = torch.rand((1, 10, 10, 10), generator=torch.Generator().manual_seed(0))
    seg = ThresholdSegmentd(keys="pred", dilation_radius=1)({"pred": pred, "image": img, "name": "s1"})
    fraction = seg["seg_info"]["brain_fraction"]
    assert fraction > 0.1
    with caplog.at_level("WARNING"):
        d = ThresholdSegmentd(keys="pred", dilation_radius=1, max_segmented_fraction=fraction / 2)(
            {"pred": pred, "image": img, "name": "s1"}
        )
    assert d["seg_info"]["rejected"] and d["seg_info"]["brain_fraction"] == pytest.approx(fraction)
    assert not d["seg"].any()
    assert "s1: the segmentation would mark" in caplog.text


def test_the_guard_is_off_for_null_from_a_command_line():
    for off in (None, "null", "None", ""):
        assert ThresholdSegmentd(keys="pred", max_segmented_fraction=off).max_segmented_fraction is None
    assert ThresholdSegmentd(keys="pred", max_segmented_fraction="0.4").max_segmented_fraction == 0.4


def test_mask_outside_brain_in_place_gives_the_masked_copys_values_bit_for_bit():
    """``inplace`` (``post#mask_native``) multiplies the map itself and gives exactly what the copy gives, signed
    zeros of negative z-values included; without it the input map is left as it was. Fails for "zeroes with a
    fill" (+0 where the copy gives -0, a different file) and for "masks the caller's map" without ``inplace``."""
    g = torch.Generator().manual_seed(1)
    brain = torch.rand((1, 9, 8, 7), generator=g) > 0.4
    zmap = MetaTensor(torch.randn((1, 9, 8, 7), generator=g))
    copy = MaskOutsideBraind(["zmap"], mask_key="brain")({"zmap": zmap, "brain": brain})["zmap"]
    assert not torch.equal(copy, zmap)  # the input is untouched
    own = zmap.clone()
    done = MaskOutsideBraind(["zmap"], mask_key="brain", inplace=True)({"zmap": own, "brain": brain})["zmap"]
    assert done.data_ptr() == own.data_ptr() and isinstance(done, MetaTensor)
    assert torch.equal(done, copy) and torch.equal(torch.signbit(done), torch.signbit(copy))
    assert bool(torch.signbit(copy[~brain]).any())  # the case the fill would get wrong is there
