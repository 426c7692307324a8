"""The volume preprocessing: labels aligned with the image, healthy slices chosen on the label's own resolution, and
a slice cache keyed on every setting of the preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd
from runner import preprocessing

from scripts.data import HealthySliceDataset
from scripts.fingerprint import fingerprint
from scripts.histogram import save_landmarks
from scripts.intensity import ScaleByPercentiled, nonzero_values
from scripts.slices import healthy_slice_indices

SHAPE = (240, 240, 12)  # the BraTS in-plane size, resized to 128 as in the paper


def write_study(folder: Path, image: np.ndarray, label: np.ndarray) -> dict[str, str]:
    """Four modalities (``image`` with a little texture: a constant image is refused) and the label, 1 mm voxels,
    RAS header (no reorientation)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = {"name": folder.name}
    texture = 1.0 + 0.02 * np.random.default_rng(0).standard_normal(image.shape)
    for key in ("t1", "t1c", "t2", "flair"):
        nib.save(nib.Nifti1Image((image * texture).astype(np.float32), np.eye(4)), folder / f"{key}.nii.gz")
        study[key] = str(folder / f"{key}.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), folder / "seg.nii.gz")
    study["label"] = str(folder / "seg.nii.gz")
    return study


def blob_study(folder: Path, seed: int = 0) -> tuple[dict[str, str], np.ndarray]:
    """A flat brain with one bright square blob per slice at a random position; the label is the blob."""
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, np.float32)
    image[20:220, 20:220] = 0.2
    label = np.zeros(SHAPE, np.uint8)
    for k in range(SHAPE[2]):
        x, y = rng.integers(40, 180, size=2)
        w = rng.integers(6, 20)
        image[x : x + w, y : y + w, k] = 1.0
        label[x : x + w, y : y + w, k] = 1
    return write_study(folder, image, label), label


def centroids(weights: np.ndarray) -> np.ndarray:
    """Per axial slice, the (row, column) centroid of ``weights`` (H, W, D); (D, 2)."""
    rows, cols = np.meshgrid(np.arange(weights.shape[0]), np.arange(weights.shape[1]), indexing="ij")
    total = weights.sum(axis=(0, 1))
    row = (weights * rows[..., None]).sum((0, 1)) / total
    return np.stack([row, (weights * cols[..., None]).sum((0, 1)) / total], 1)


@pytest.mark.parametrize("label_mode", ["nearest-exact", "nearest"])
def test_label_centroids_coincide_with_the_image_after_resize_and_invert(label_mode, tmp_path):
    """The image blob and its label share their centroid after the resize to 128 (nearest-exact), and the label
    brought back by Invertd lands on the original label; the legacy nearest rule shifts the label."""
    study, label = blob_study(tmp_path / "s")
    transforms = preprocessing(register=False, label_interpolation=label_mode)
    data = transforms(dict(study))
    image = data["image"][0].numpy()  # (128, 128, D), the blob 1 / 0.2 scaled by the 99th percentile
    blob = np.where(image > 3 * np.median(image[image > 0]), image, 0)  # the bright part only
    offset = centroids(data["label"][0].numpy()) - centroids(blob)  # output pixels
    bias = np.abs(offset.mean(axis=0)).max()
    if label_mode == "nearest-exact":
        assert bias < 0.1, f"label centroid {offset.mean(0)} output pixels off the image's"
        assert np.abs(offset).max() < 0.35
    else:
        assert bias > 0.2, "the legacy rule was expected to shift the label"
    # back onto the input grid as inference inverts its segmentation: with the image's transforms, bilinearly, then
    # > 0.5 (MONAI's nearest_interp would use the legacy nearest rule and shift it back by half a pixel)
    seg = MetaTensor(data["label"].as_tensor().float(), meta=dict(data["image"].meta))
    seg.applied_operations = list(data["image"].applied_operations)
    back = Invertd(keys="seg", transform=transforms, orig_keys="image", nearest_interp=False)({**data, "seg": seg})[
        "seg"
    ][0].numpy()
    assert back.shape == label.shape
    shift = (centroids(back > 0.5) - centroids(label)).mean(axis=0)
    if label_mode == "nearest-exact":
        assert np.abs(shift).max() < 0.3, f"inverted label {shift} input pixels off the original"


def test_healthy_slices_are_chosen_on_the_label_at_its_own_resolution(tmp_path):
    """A one-voxel tumour fragment that the 128 x 128 label loses still keeps its slice out of training."""
    image = np.zeros(SHAPE, np.float32)
    image[20:220, 20:220] = 1.0
    label = np.zeros(SHAPE, np.uint8)
    label[100:110, 100:110, 3] = 1  # a lesion that survives the resize
    label[151, 151, 7] = 1  # a fragment that does not
    study = write_study(tmp_path / "s", image, label)
    data = preprocessing(register=False)(dict(study))
    small = data["label"][0].numpy()
    assert small[..., 3].any() and not small[..., 7].any(), "the fragment should vanish from the resized label"
    assert data["label_slices"].tolist() == [k in (3, 7) for k in range(SHAPE[2])]
    keep = healthy_slice_indices(data["image"], data["label_slices"]).tolist()
    assert keep == [k for k in range(SHAPE[2]) if k not in (3, 7)]
    # the cache holds exactly those slices
    dataset = HealthySliceDataset([study], preprocessing(register=False), tmp_path / "c")
    assert len(dataset) == SHAPE[2] - 2


def test_slice_cache_is_rebuilt_when_any_preprocessing_setting_changes(tmp_path):
    """The cache key is derived from the configured transforms: every setting counts, the landmarks' contents too."""
    landmarks = tmp_path / "landmarks.json"
    percentiles = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
    save_landmarks(landmarks, {m: np.linspace(0.1, 1.0, 11) for m in ("t1", "t1c", "t2", "flair")}, percentiles)

    def key(**settings) -> str:
        kwargs = {"image_size": 32, "register": False, "histogram_landmarks": str(landmarks), **settings}
        return fingerprint(preprocessing(**kwargs))

    base = key()
    assert key() == base, "the key must be stable"
    changed = {
        "register auto": key(register="auto"),
        "register true": key(register=True),
        "reference modality": key(reference_modality="t2"),
        "histogram matching": key(histogram_matching=True),
        "percentile": key(intensity_percentile=98),
        "image size": key(image_size=64),
        "modalities": key(modalities=["t1", "t1c", "flair", "t2"]),
        "label rule": key(label_interpolation="nearest"),
        "atlas": key(atlas="mni152"),
    }
    for name, value in changed.items():
        assert value != base, f"changing the {name} kept the cache key"
    matched = key(histogram_matching=True)
    save_landmarks(landmarks, {m: np.linspace(0.1, 1.2, 11) for m in ("t1", "t1c", "t2", "flair")}, percentiles)
    assert key(histogram_matching=True) != matched, "new landmarks in the same file kept the cache key"

    # through the dataset: min_brain_fraction and the transform each make a new cache file
    image = np.zeros(SHAPE, np.float32)
    image[20:220, 20:220] = 1.0
    image[20:220, 20:60, :4] = 0.0  # slices 0-3 hold less brain
    label = np.zeros(SHAPE, np.uint8)
    label[100:110, 100:110, 5] = 1
    study = write_study(tmp_path / "s", image, label)
    transform = preprocessing(image_size=32, register=False)
    first = HealthySliceDataset([study], transform, tmp_path / "cache").files
    assert HealthySliceDataset([study], transform, tmp_path / "cache").files == first
    assert HealthySliceDataset([study], transform, tmp_path / "cache", min_brain_fraction=0.65).files != first
    other = preprocessing(image_size=32, register=False, intensity_percentile=95)
    assert HealthySliceDataset([study], other, tmp_path / "cache").files != first
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert json.loads(json.dumps(str(first[0])))  # a plain path


def test_label_slices_are_absent_without_label(tmp_path):
    study = write_study(tmp_path / "s", np.ones(SHAPE, np.float32), np.zeros(SHAPE, np.uint8))
    del study["label"]
    data = preprocessing(image_size=32, register=False)(dict(study))
    assert "label_slices" not in data
    assert healthy_slice_indices(torch.as_tensor(data["image"])).tolist() == list(range(SHAPE[2]))


def test_antialias_in_pieces_equals_resizes_own():
    from monai.transforms import Resize

    from scripts.antialias import AntiAlias

    torch.manual_seed(0)
    x = torch.rand(4, 60, 50, 20)
    for size in ((32, 32, -1), (32, 32, 10)):  # the depth kept (slabs) or shrunk (whole channels)
        ref = Resize(size, mode="bilinear", anti_aliasing=True)(x)
        pieces = Resize(size, mode="bilinear", anti_aliasing=False)(AntiAlias(size, slab=3)(x))
        torch.testing.assert_close(torch.as_tensor(pieces), torch.as_tensor(ref), rtol=0, atol=1e-6)
    assert AntiAlias((60, 50, -1))(x) is x  # nothing shrinks: nothing to smooth


@pytest.mark.parametrize("inplace", [False, True])
def test_scale_by_percentile_divides_each_channel_by_its_nonzero_percentile(inplace):
    """Against numpy: each channel over the 99th percentile of its non-zero voxels, background 0, an empty channel
    unchanged. In place, the pipeline's own tensor is divided (same storage, same values); otherwise the input is left
    as it was. Fails for "percentile over all voxels" (the zeros pull it down), "copies despite inplace" (the
    memory it saves), and "divides the caller's tensor" without it."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand((3, 20, 18, 16), generator=g) * 500 + 1
    x[:, :6] = 0  # background
    x[2] = 0  # an empty channel
    data = {"image": MetaTensor(x.clone())}
    before = data["image"].clone()
    out = ScaleByPercentiled("image", percentile=99.0, inplace=inplace)(data)["image"]
    v = x.numpy()
    expected = v.copy()
    for c in range(2):
        expected[c] = v[c] / np.float32(np.percentile(v[c][v[c] != 0], 99.0))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=0)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert (out.data_ptr() == data["image"].data_ptr()) is inplace
    if not inplace:
        assert torch.equal(data["image"], before)


@pytest.mark.parametrize("shape", [(40, 7, 5), (16, 3), (17,), (3, 4, 5, 6)])
def test_nonzero_values_are_the_masked_values_in_order(shape):
    """Planted bugs: "drops the last partial block of rows" (40 and 17 rows are not multiples of 16), "gathers in
    another order" (the values must be x[x != 0]'s, element for element), "keeps -0 or NaN out" (both are != 0 as
    the mask has it: NaN != 0 is True, -0.0 != 0 is False)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    x[torch.rand(shape, generator=g) < 0.4] = 0.0
    x.view(-1)[1] = float("nan")
    x.view(-1)[2] = -0.0
    got, want = nonzero_values(x), x[x != 0]
    assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got[~got.isnan()], want[~want.isnan()])
    assert nonzero_values(torch.zeros(5, 3)).numel() == 0 and nonzero_values(torch.tensor(2.0)).tolist() == [2.0]
