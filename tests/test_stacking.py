"""The stack and the orientation of the preprocessing with one copy of the study (``scripts/stacking.py``): the
values and metadata of MONAI's own ``ConcatItemsd`` and ``Orientationd``, bit for bit, and what they free."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ConcatItemsd, Invertd, Orientationd
from runner import preprocessing

from scripts import stacking

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS's header: an orientation to RAS flips the first two axes
PERMUTED = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # axes swapped: not only flips


def modalities(affine: np.ndarray, dtypes=(torch.float32,) * 4, shape=(1, 6, 5, 4)) -> dict[str, MetaTensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for i, dtype in enumerate(dtypes):
        values = (torch.rand(shape, generator=g) * 100).to(dtype)
        out[f"m{i}"] = MetaTensor(values, affine=torch.as_tensor(affine, dtype=torch.float64), meta={"n": i})
    return out


def same_meta(a: MetaTensor, b: MetaTensor) -> None:
    assert type(a) is type(b) and a.dtype == b.dtype
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert torch.equal(a.affine, b.affine)
    assert a.meta.keys() == b.meta.keys() and a.meta["n"] == b.meta["n"]
    assert len(a.applied_operations) == len(b.applied_operations)
    for x, y in zip(a.applied_operations, b.applied_operations, strict=True):
        assert x.keys() == y.keys()
        assert str({**x, "id": 0}) == str({**y, "id": 0})  # each transform object has its own id
    assert a.is_batch == b.is_batch


@pytest.mark.parametrize("dtypes", [(torch.float32,) * 4, (torch.int16, torch.float32, torch.uint8, torch.int16)])
def test_released_stack_equals_monais_concatenation_and_drops_each_modality(dtypes) -> None:
    """Planted bugs it fails on: "keeps the sources" (their weak references stay alive), "channels in the wrong
    order", "loses the first item's metadata" (affine and meta of item 0), "casts to float32 whatever the inputs"
    (torch.cat promotes int16 + uint8 + float32 to float32 but int16 + uint8 to int16)."""
    keys = ["m0", "m1", "m2", "m3"]
    expected = ConcatItemsd(keys, "image")(modalities(LPS, dtypes))
    data = modalities(LPS, dtypes)
    refs = [weakref.ref(data[k]) for k in keys]
    data["label"] = "kept"
    out = stacking.ConcatItemsd(keys, "image", release=True)(data)
    gc.collect()
    assert all(r() is None for r in refs), "a modality is still held after the stack"
    assert set(out) == {"image", "label"} and set(data) == {"label"}
    same_meta(out["image"], expected["image"])
    ints = stacking.ConcatItemsd(["m1", "m3"], "x", release=True)(modalities(LPS, (torch.uint8, torch.int16) * 2))
    assert ints["x"].dtype == torch.int16


def test_stack_without_release_is_monais_and_leaves_the_dictionary_alone() -> None:
    """Planted bug: "releases even when release is off" (the caller's dictionary loses its items)."""
    data = modalities(LPS)
    out = stacking.ConcatItemsd(["m0", "m1"], "image")(data)
    assert set(data) == {"m0", "m1", "m2", "m3"}
    same_meta(out["image"], ConcatItemsd(["m0", "m1"], "image")(modalities(LPS))["image"])


@pytest.mark.parametrize("affine", [LPS, np.eye(4), np.diag([1.0, -1.0, -1.0, 1.0])])
def test_orientation_in_place_equals_monais_and_inverts_the_same(affine) -> None:
    """Planted bugs it fails on: "flips only the first channel", "flips one axis too few", "keeps the old affine or
    operation" (the metadata and the inversion differ), "copies despite inplace" (not the same buffer, forward or
    inverse)."""
    image = ConcatItemsd(["m0", "m1", "m2", "m3"], "image")(modalities(affine))["image"]
    ptr = image.data_ptr()
    monai_orient = Orientationd("image", axcodes="RAS", labels=None)
    ours = stacking.Orientationd("image", axcodes="RAS", labels=None, inplace=True)
    expected = Compose([monai_orient])({"image": image.clone()})["image"]
    out = Compose([ours])({"image": image})["image"]
    same_meta(out, expected)
    assert out is image and out.data_ptr() == ptr
    pred = out[:1].clone()  # a one-channel map on the oriented grid, as post#invert gets it
    inverted = Invertd("pred", Compose([ours]), orig_keys="image")({"image": out, "pred": pred})["pred"]
    expected_inv = Invertd("pred", Compose([monai_orient]), orig_keys="image")(
        {"image": expected, "pred": expected[:1].clone()}
    )["pred"]
    same_meta(inverted, expected_inv)
    assert inverted.data_ptr() == pred.data_ptr(), "the inverse made a new map despite inplace"
    source = ConcatItemsd(["m0", "m1", "m2", "m3"], "i")(modalities(affine))["i"]
    assert torch.equal(inverted.as_tensor(), source[:1].as_tensor())


@pytest.mark.parametrize("dims", [[1], [2, 3], [1, 2, 3], []])
def test_flip_in_place_equals_torch_flip(dims) -> None:
    """Planted bugs: "misses the middle plane pair" and "swaps a plane with itself off by one" (odd and even
    sizes: 5 and 4), "flips a dimension not asked for"."""
    x = torch.rand(2, 5, 4, 3)
    want = x.flip(dims) if dims else x.clone()
    ptr = x.data_ptr()
    assert torch.equal(stacking.flip_in_place(x, dims), want) and x.data_ptr() == ptr


def test_orientation_that_permutes_axes_takes_monais_new_tensor() -> None:
    """Planted bug: "flips in place when the axes are permuted" (the values would be wrong for a swapped header)."""
    image = ConcatItemsd(["m0", "m1"], "image")(modalities(PERMUTED, shape=(1, 6, 6, 4)))["image"]
    monai_orient = Orientationd("image", axcodes="RAS", labels=None)
    expected = monai_orient({"image": image.clone()})["image"]
    ours = stacking.Orientationd("image", axcodes="RAS", labels=None, inplace=True)
    out = ours({"image": image})["image"]
    same_meta(out, expected)
    pred = out[:1].clone()  # the inverse of a permutation takes MONAI's path too, from the image's own operations
    inverted = Invertd("pred", Compose([ours]), orig_keys="image")({"image": out, "pred": pred})["pred"]
    want = Invertd("pred", Compose([monai_orient]), orig_keys="image")({"image": expected, "pred": pred.clone()})
    same_meta(inverted, want["pred"])


def test_the_preprocessing_gives_the_same_image_with_one_copy_as_with_monais_steps(tmp_path: Path) -> None:
    """The configured preprocessing (release, inplace) against MONAI's ``ConcatItemsd`` and ``Orientationd``
    (``release false``, ``inplace false``) on a study with BraTS's LPS header: the same image, brain and label, and
    ``Invertd`` gives the same map back. Planted bug: any of the above."""
    rng = np.random.default_rng(1)
    shape = (40, 36, 8)
    body = np.zeros(shape, np.float32)
    body[6:34, 5:31, 1:7] = 1.0
    study = {"name": "lps"}
    for key in ("t1", "t1c", "t2", "flair"):
        values = (body * (50 + 10 * rng.standard_normal(shape))).clip(0).astype(np.float32)
        nib.save(nib.Nifti1Image(values, LPS), tmp_path / f"{key}.nii.gz")
        study[key] = str(tmp_path / f"{key}.nii.gz")
    nib.save(nib.Nifti1Image((body[..., :] * (rng.random(shape) > 0.7)).astype(np.uint8), LPS), tmp_path / "seg.nii")
    study["label"] = str(tmp_path / "seg.nii")
    settings = {"register": False, "image_size": 16, "min_brain_ml": 0}
    ours = preprocessing(**settings)
    monai_steps = preprocessing(**settings, **{"pre#stack#release": False, "pre#orient#inplace": False})
    a, b = ours(dict(study)), monai_steps(dict(study))
    for key in ("image", "label"):
        assert torch.equal(a[key].as_tensor(), b[key].as_tensor())
        assert torch.equal(a[key].affine, b[key].affine)
    assert torch.equal(a["brain"], b["brain"])
    pred = {"image": a["image"], "pred": a["image"][:1].clone()}
    pred_b = {"image": b["image"], "pred": b["image"][:1].clone()}
    back = Invertd("pred", ours, orig_keys="image")(pred)["pred"]
    back_b = Invertd("pred", monai_steps, orig_keys="image")(pred_b)["pred"]
    assert back.shape[1:] == shape and torch.equal(back.as_tensor(), back_b.as_tensor())
    assert torch.equal(back.affine, back_b.affine)


@pytest.mark.parametrize("channel_dim", [0, 1])
@pytest.mark.parametrize("threshold", [0.0, 0.5, -1.0])
def test_brain_mask_one_channel_at_a_time_equals_any_channel_above_the_threshold_in_magnitude(
    channel_dim: int, threshold: float
) -> None:
    """``brain_mask`` without a float copy of the image gives ``(|image| > threshold).any(channel)``, with NaN, -0 and
    negative voxels. Planted bugs: "only the first channel", "x > threshold (forgets negative voxels)", "NaN counted
    as brain"."""
    from scripts.intensity import brain_mask

    g = torch.Generator().manual_seed(3)
    image = torch.randn((3, 4, 5, 6), generator=g) * (torch.rand((3, 4, 5, 6), generator=g) > 0.5)
    image[0, 0, 0, :2] = torch.tensor([float("nan"), -0.0])
    image[1, 0, 0, 0] = float("nan")
    expected = (image.abs() > threshold).any(dim=channel_dim, keepdim=True)
    assert torch.equal(brain_mask(image, threshold, channel_dim), expected)
    assert torch.equal(brain_mask(image > 0, threshold, channel_dim), (image > 0).any(dim=channel_dim, keepdim=True))


def test_the_checks_slab_statistics_equal_numpys_over_the_positive_voxels() -> None:
    """``CheckStudyd``'s statistics, a slab of slices at a time in float64: numpy's count, mean and sample deviation of
    the voxels above zero, and every NaN or infinite voxel counted across slab boundaries. Planted bugs: "the last slab
    dropped", "the population deviation (n)", "zero voxels counted"."""
    from scripts.errors import StudyError
    from scripts.loading import SLAB, CheckStudyd, positive_stats

    g = torch.Generator().manual_seed(5)
    image = (torch.randn((1, 7, 6, 2 * SLAB + 3), generator=g) * 30 + 40).clamp_min(0)
    values = image.numpy()[image.numpy() > 0].astype(np.float64)
    count, mean, std = positive_stats(image)
    assert count == values.size and mean == pytest.approx(values.mean(), rel=1e-12)
    assert std == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert positive_stats(torch.zeros((1, 2, 2, 3))) == (0, 0.0, 0.0)
    bad = image.clone()
    bad[0, 0, 0, [0, SLAB, 2 * SLAB + 2]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    with pytest.raises(StudyError, match="holds 3 NaN or infinite voxels"):
        CheckStudyd(["t1"], modalities=["t1"], min_brain_ml=0)({"t1": MetaTensor(bad)})
