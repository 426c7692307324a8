"""Registration to the SRI24 atlas, the way back (to_native), the MONAI transform, and histogram landmarks.

Tests on real images use ../shared/data through the ``shared_data`` fixture (skipped when absent). Registrations
run at reduced resolution where that does not weaken the check: the known-transform test registers onto a 2 mm
copy of the glioma case and still asks for < 2 mm error.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage

from scripts import MODALITIES
from scripts.atlas import atlas_grid, atlas_path, load_atlas
from scripts.errors import StudyError
from scripts.grid import Grid, affine_ras, read_grid, read_image, same_lattice, to_metatensor
from scripts.histogram import DEFAULT_PERCENTILES, load_landmarks, match_histogram, save_landmarks, standard_landmarks
from scripts.loading import LoadStudyd
from scripts.native import to_native, write_transform
from scripts.registration import (
    RegisterToAtlasd,
    SkullStripWarning,
    looks_skull_stripped,
    mask_modality,
    needs_registration,
    register_study,
)
from scripts.registration_stages import RegistrationSettings, StageSettings, compose
from scripts.studies import find_study_files

GLIOMA_FILES = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}

# A reduced budget for the known-transform test (2 mm fixed image): coarser pyramid, fewer samples.
FAST = RegistrationSettings(
    rigid=StageSettings(shrink_factors=(4, 2, 1), smoothing_sigmas=(2.0, 1.0, 0.0), iterations=100, sampling=0.05),
    affine=StageSettings(shrink_factors=(4, 2, 1), smoothing_sigmas=(4.0, 2.0, 0.0), iterations=150, sampling=0.1),
)


def glioma_paths(shared_data: Path) -> dict[str, str]:
    return {key: str(shared_data / "cases" / "glioma_sri24" / f"{name}.nii.gz") for key, name in GLIOMA_FILES.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def blank_grid(
    size: tuple[int, int, int], spacing: tuple[float, ...], angles_deg: tuple[float, ...], centre
) -> sitk.Image:
    """An empty image of ``size`` whose axes are rotated by ``angles_deg`` and whose centre lies at ``centre``."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*np.radians(angles_deg))
    direction = np.reshape(rotation.GetMatrix(), (3, 3))
    half_extent = direction @ ((np.asarray(size) - 1) / 2.0 * np.asarray(spacing))
    image = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(c) for c in np.asarray(centre) - half_extent])
    return image


def brain_points(image: sitk.Image, step: int = 7) -> np.ndarray:
    """Physical points (N, 3) of every ``step``-th non-zero voxel of ``image``."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(image) > 0)[::step, ::-1]
    return np.array([image.TransformIndexToPhysicalPoint([int(i) for i in idx]) for idx in indices])


def mean_error(recovered: sitk.Transform, truth: sitk.Transform, points: np.ndarray) -> float:
    """Mean distance (mm) between where two transforms send ``points``."""
    return float(
        np.mean([np.linalg.norm(np.subtract(recovered.TransformPoint(p), truth.TransformPoint(p))) for p in points])
    )


# --------------------------------------------------------------------------------------------------------------
# reading and headers
# --------------------------------------------------------------------------------------------------------------


def test_atlas_is_shipped_and_reads_as_3d(bundle_root: Path) -> None:
    assert atlas_path() == bundle_root / "atlas" / "sri24_t1_brain.nii.gz"
    assert nib.load(atlas_path()).shape == (240, 240, 155, 1)  # stored 4D, as found
    atlas = load_atlas()
    assert atlas.GetDimension() == 3 and atlas.GetSize() == (240, 240, 155)
    assert atlas.GetSpacing() == (1.0, 1.0, 1.0)
    assert (bundle_root / "docs" / "data_license.txt").read_text().count("Louis Collins") == 1


def test_4d_singleton_loads_as_3d_and_bad_files_raise(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((7, 6, 5)).astype(np.float32)
    affine = np.diag([0.9, 0.9, 5.5, 1.0])
    nib.save(nib.Nifti1Image(data[..., None], affine), tmp_path / "four.nii.gz")
    image = read_image(tmp_path / "four.nii.gz")
    assert image.GetDimension() == 3 and image.GetSize() == (7, 6, 5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), data)
    assert read_grid(tmp_path / "four.nii.gz").size == (7, 6, 5)

    nib.save(nib.Nifti1Image(np.zeros((7, 6, 5, 2), np.float32), affine), tmp_path / "two.nii.gz")
    with pytest.raises(StudyError, match="two.nii.gz.*3D"):
        read_image(tmp_path / "two.nii.gz")
    bad = data.copy()
    bad[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, affine), tmp_path / "nan.nii.gz")
    with pytest.raises(StudyError, match="nan.nii.gz.*NaN"):
        read_image(tmp_path / "nan.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(StudyError, match="junk.nii.gz.*unreadable"):
        read_image(tmp_path / "junk.nii.gz")
    with pytest.raises(StudyError, match="junk.nii.gz"):
        needs_registration([tmp_path / "junk.nii.gz"])


def test_lps_and_ras_headers_give_the_same_physical_image(shared_data: Path, tmp_path: Path) -> None:
    """The glioma t1 (LPS header) and a copy stored RAS (x and y voxel order reversed, header adjusted) are one image
    in physical space, and both count as already on the atlas lattice."""
    source = nib.load(glioma_paths(shared_data)["t1"])
    data = np.asarray(source.dataobj, dtype=np.float32)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(data.shape[:2]) - 1  # voxel (i, j) of the copy is voxel (X-1-i, Y-1-j) of the source
    ras = nib.Nifti1Image(np.ascontiguousarray(data[::-1, ::-1]), source.affine @ flip)
    nib.save(ras, tmp_path / "t1_ras.nii.gz")
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")

    lps_image = read_image(glioma_paths(shared_data)["t1"])
    ras_image = read_image(tmp_path / "t1_ras.nii.gz")
    assert not np.allclose(lps_image.GetDirection(), ras_image.GetDirection())
    back = sitk.Resample(ras_image, lps_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lps_image))
    assert needs_registration([tmp_path / "t1_ras.nii.gz"]) is False
    # MONAI's view of both: the same physical points once reoriented
    lps_mt, ras_mt = to_metatensor(lps_image), to_metatensor(ras_image)
    np.testing.assert_allclose(lps_mt.affine @ np.array([0, 0, 0, 1.0]), ras_mt.affine @ np.array([239, 239, 0, 1.0]))


def test_lattice_comparison_tolerates_voxel_order_not_shifts() -> None:
    atlas = Grid((240, 240, 155), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    brats = Grid((240, 240, 155), (1.0, 1.0, 1.0), (0.0, -239.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    assert same_lattice(brats, atlas) and same_lattice(atlas, atlas)
    assert not same_lattice(Grid(brats.size, brats.spacing, (0.0, -239.5, 0.0), brats.direction), atlas)
    assert not same_lattice(Grid(brats.size, (1.0, 1.0, 1.1), brats.origin, brats.direction), atlas)
    assert not same_lattice(Grid((240, 240, 154), brats.spacing, brats.origin, brats.direction), atlas)
    tilted = sitk.Euler3DTransform()
    tilted.SetRotation(0.0, 0.0, 0.01)
    assert not same_lattice(Grid(brats.size, brats.spacing, brats.origin, tilted.GetMatrix()), atlas)


def test_needs_registration_on_real_studies(shared_data: Path) -> None:
    assert needs_registration(glioma_paths(shared_data)) is False
    lgg = find_study_files(shared_data / "cases" / "lgg_native")
    assert needs_registration({key: lgg[key] for key in MODALITIES}) is True
    # one modality on another grid is enough
    mixed = {**glioma_paths(shared_data), "flair": lgg["flair"]}
    assert needs_registration(mixed) is True


def test_mask_modality_follows_grid_then_file_name(shared_data: Path, tmp_path: Path) -> None:
    """lgg_native's t1 and t1c share one header (yet are ~8 degrees apart): the mask's name says it is t1c's."""
    lgg = find_study_files(shared_data / "cases" / "lgg_native")
    grids = {key: read_grid(lgg[key]) for key in MODALITIES}
    assert grids["t1"] == grids["t1c"]
    mask_grid = read_grid(lgg["mask"])
    assert mask_modality(mask_grid, grids, "t1", mask_name=lgg["mask"]) == "t1c"
    plain = tmp_path / "brain_mask.nii.gz"
    assert mask_modality(mask_grid, grids, "t1", mask_name=plain) == "t1"
    assert mask_modality(mask_grid, grids, "t2", mask_name=plain) == "t1"  # the first modality whose grid it shares
    assert mask_modality(mask_grid, grids, "t1", explicit="flair") == "flair"
    assert mask_modality(read_grid(glioma_paths(shared_data)["t1"]), grids, "t1") is None
    with pytest.raises(StudyError, match="'dwi'"):
        mask_modality(mask_grid, grids, "t1", explicit="dwi", mask_name=plain)


def test_skull_stripping_heuristic(shared_data: Path) -> None:
    assert looks_skull_stripped(read_image(glioma_paths(shared_data)["t1"]))
    assert looks_skull_stripped(load_atlas())
    assert not looks_skull_stripped(read_image(shared_data / "cases" / "lgg_native" / "t1.nii.gz"))


def test_unstripped_study_without_mask_warns(tmp_path: Path) -> None:
    """A small noisy 'head' (background not constant) without mask: the warning comes, registration still runs."""
    rng = np.random.default_rng(1)
    head = rng.normal(20.0, 5.0, (48, 48, 40)).astype(np.float32)
    head[8:40, 8:40, 6:34] += 300.0
    nib.save(nib.Nifti1Image(head, np.diag([4.0, 4.0, 4.0, 1.0])), tmp_path / "t1.nii.gz")
    tiny = StageSettings(shrink_factors=(8,), smoothing_sigmas=(4.0,), iterations=3, sampling=0.01)
    with pytest.warns(SkullStripWarning, match="skull stripping is out of scope"):
        result = register_study({"t1": tmp_path / "t1.nii.gz"}, settings=RegistrationSettings(rigid=tiny, affine=tiny))
    assert result.registered and result.images["t1"].GetSize() == (240, 240, 155)


# --------------------------------------------------------------------------------------------------------------
# pass-through
# --------------------------------------------------------------------------------------------------------------


def load_and_register(**options: object) -> Compose:
    """The preprocessing's first steps as configured: load (read once), then register to the atlas when needed."""
    keys = [*MODALITIES, "mask", "label"]
    return Compose([LoadStudyd(keys=keys), RegisterToAtlasd(keys=MODALITIES, reference="t1", **options)])


def test_registered_study_passes_through_unchanged(shared_data: Path) -> None:
    paths = glioma_paths(shared_data)
    data = load_and_register()(dict(paths))
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    for key in MODALITIES:
        plain = loader(paths[key])
        assert isinstance(data[key], MetaTensor)
        assert data[key].shape == (1, 240, 240, 155) and data[key].dtype == torch.float32
        assert torch.equal(data[key].as_tensor(), plain.as_tensor())
        assert torch.equal(data[key].affine, plain.affine)
    assert "atlas_transform" not in data  # not registered: nothing to undo
    assert data["native_reference"] == paths["t1"]
    assert not RegisterToAtlasd(keys=MODALITIES).needed(data)
    assert RegisterToAtlasd(keys=MODALITIES, register=True).needed(data)
    # the way back is the identity for a study that was not registered
    back = to_native(data["t1"], None, paths["t1"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(read_image(paths["t1"])))


# --------------------------------------------------------------------------------------------------------------
# a known transform is recovered
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known_study(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The glioma case moved by known transforms into two anisotropic, oblique native grids, then registered back.

    Ground truth: t1 native points map to case points by ``to_case_t1`` (affine: rotation, scaling, shift), flair
    native points by ``to_case_flair`` = ``to_case_t1`` after a rigid motion (the flair grid's patient moved). The
    fixed image is the unmodified case at 2 mm rather than the SRI24 atlas: this case lacks the inferior brain, so
    even its own best affine fit to SRI24 is not the identity, whereas registered back to itself the answer is exact.
    A brain mask is given on the flair grid, so it reaches the reference through the co-registration.
    """
    folder = tmp_path_factory.mktemp("known_study")
    paths = glioma_paths(shared_data)
    t1_case, flair_case = read_image(paths["t1"]), read_image(paths["flair"])
    brain = sitk.Cast(t1_case > 0, sitk.sitkFloat32)
    centre = np.mean(brain_points(t1_case, step=50), axis=0)

    to_case_t1 = sitk.AffineTransform(3)
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*np.radians([10.0, -8.0, 15.0]))
    to_case_t1.SetMatrix((np.reshape(rotation.GetMatrix(), (3, 3)) @ np.diag([1.06, 0.95, 1.03])).ravel().tolist())
    to_case_t1.SetCenter(centre.tolist())
    to_case_t1.SetTranslation([20.0, -15.0, 10.0])
    native_centre = np.asarray(to_case_t1.GetInverse().TransformPoint(centre.tolist()))
    motion = sitk.Euler3DTransform()  # flair native -> t1 native
    motion.SetCenter(native_centre.tolist())
    motion.SetRotation(*np.radians([-8.0, 6.0, -10.0]))
    motion.SetTranslation([-10.0, 12.0, 6.0])
    to_case_flair = compose(motion, to_case_t1)

    t1_grid = blank_grid((170, 195, 52), (1.2, 1.2, 3.5), (0.0, 6.0, -4.0), native_centre)
    flair_grid = blank_grid(
        (205, 230, 40), (1.0, 1.0, 5.0), (-10.0, 0.0, 3.0), motion.GetInverse().TransformPoint(native_centre)
    )
    native = {
        "t1": sitk.Resample(t1_case, t1_grid, to_case_t1, sitk.sitkLinear, 0.0, sitk.sitkFloat32),
        "flair": sitk.Resample(flair_case, flair_grid, to_case_flair, sitk.sitkLinear, 0.0, sitk.sitkFloat32),
        "mask": sitk.Resample(brain, flair_grid, to_case_flair, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8),
    }
    files = {key: str(folder / f"{key}.nii.gz") for key in native}
    for key, image in native.items():
        sitk.WriteImage(image, files[key])

    fixed_grid = blank_grid((120, 120, 78), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), centre)
    fixed_grid.SetOrigin(t1_case.TransformContinuousIndexToPhysicalPoint([0.5, 0.5, 0.5]))
    fixed_grid.SetDirection(t1_case.GetDirection())
    fixed = sitk.Resample(sitk.SmoothingRecursiveGaussian(t1_case, 1.0), fixed_grid, sitk.Transform(), sitk.sitkLinear)
    result = register_study(
        {"t1": files["t1"], "flair": files["flair"]}, mask=files["mask"], atlas=fixed, settings=FAST
    )
    return {
        "result": result,
        "files": files,
        "native": native,
        "fixed": fixed,
        "points": brain_points(t1_case),
        "truth": {"t1": to_case_t1.GetInverse(), "flair": to_case_flair.GetInverse()},
        "brain": sitk.Resample(brain, fixed, sitk.Transform(), sitk.sitkNearestNeighbor),
    }


@pytest.mark.slow  # a registration of a real study
def test_known_transform_is_recovered(known_study: dict) -> None:
    result = known_study["result"]
    assert result.registered
    for key in ("t1", "flair"):
        error = mean_error(result.transforms[key], known_study["truth"][key], known_study["points"])
        print(f"{key}: mean displacement error {error:.2f} mm inside the brain")
        assert error < 2.0, f"{key}: mean displacement error {error:.2f} mm inside the brain"
        assert result.images[key].GetSize() == known_study["fixed"].GetSize()
    # the mask came on the flair grid and lands on the case's brain
    mask = sitk.GetArrayFromImage(result.mask) > 0
    assert dice(mask, sitk.GetArrayFromImage(known_study["brain"]) > 0) > 0.9


@pytest.mark.slow  # a registration of a real study
def test_to_native_returns_the_reference_grid(known_study: dict, tmp_path: Path) -> None:
    result, native_t1 = known_study["result"], known_study["native"]["t1"]
    for interpolator in ("linear", "nearest"):
        back = to_native(result.images["t1"], result.transforms["t1"], known_study["files"]["t1"], interpolator)
        assert back.GetSize() == native_t1.GetSize()
        np.testing.assert_allclose(back.GetSpacing(), native_t1.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(back.GetOrigin(), native_t1.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(back.GetDirection(), native_t1.GetDirection(), atol=1e-6)
    # the map comes back where it was: correlation with the native t1 inside the brain
    back = sitk.GetArrayFromImage(to_native(result.images["t1"], result.transforms["t1"], result.reference_native))
    original = sitk.GetArrayFromImage(native_t1)
    inside = (back > 0) & (original > 0)
    assert np.corrcoef(back[inside], original[inside])[0, 1] > 0.9
    # a plain (x, y, z) array on the output grid works as well as the image
    array = sitk.GetArrayFromImage(result.images["t1"]).transpose(2, 1, 0)
    from_array = to_native(array, result.transforms["t1"], native_t1, atlas=known_study["fixed"])
    np.testing.assert_allclose(sitk.GetArrayFromImage(from_array), back, atol=1e-2)  # float32 geometry round trip

    path = write_transform(result.transforms["t1"], tmp_path / "sub" / "t1_to_atlas.tfm")
    assert [p.name for p in path.parent.iterdir()] == ["t1_to_atlas.tfm"]
    reread = sitk.ReadTransform(str(path))
    assert mean_error(reread, result.transforms["t1"], known_study["points"][::20]) < 1e-3


# --------------------------------------------------------------------------------------------------------------
# the raw study with its mask, through the MONAI transform
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a registration of a real study
def test_lgg_native_lands_on_the_atlas_brain(shared_data: Path) -> None:
    study = find_study_files(shared_data / "cases" / "lgg_native")
    data = load_and_register(mask_key="mask")({key: study[key] for key in (*MODALITIES, "mask")})
    atlas_affine = torch.as_tensor(affine_ras(load_atlas()), dtype=torch.float64)
    for key in (*MODALITIES, "mask"):
        assert isinstance(data[key], MetaTensor) and data[key].shape == (1, 240, 240, 155)
        assert data[key].dtype == torch.float32
        assert torch.allclose(data[key].affine, atlas_affine)
    plain_atlas = LoadImage(image_only=True, ensure_channel_first=True)(atlas_path())
    assert torch.allclose(plain_atlas.affine.to(torch.float64), atlas_affine)
    mask = data["mask"][0].numpy() > 0
    overlap = dice(mask, plain_atlas[0].numpy() > 0)
    print(f"lgg_native: registered brain mask vs atlas brain Dice {overlap:.4f}")
    assert overlap >= 0.90
    assert np.asarray(data["atlas_transform"]).shape == (4, 4)  # a matrix: it passes through MONAI's batching
    assert data["native_reference"] == study["t1"]
    # intensities are zero outside the brain mask
    assert float(data["flair"][0][~mask].abs().max()) == 0.0
    back = to_native(data["mask"], data["atlas_transform"], data["native_reference"], "nearest")
    assert Grid.of(back) == read_grid(study["t1"])


# --------------------------------------------------------------------------------------------------------------
# histogram landmarks
# --------------------------------------------------------------------------------------------------------------


def _brainish(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    volume = np.zeros((30, 30, 30), np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[5:25, 5:25, 5:25] = True
    volume[mask] = rng.gamma(4.0, 50.0, int(mask.sum()))
    return volume, mask


def test_matching_to_own_landmarks_is_identity() -> None:
    volume, mask = _brainish(0)
    landmarks = standard_landmarks([volume], [mask])
    assert landmarks.shape == (len(DEFAULT_PERCENTILES),) and np.all(np.diff(landmarks) > 0)
    np.testing.assert_allclose(match_histogram(volume, mask, landmarks), volume, rtol=1e-5, atol=1e-3)


def test_scaled_copy_is_mapped_back(tmp_path: Path) -> None:
    volume, mask = _brainish(1)
    landmarks = standard_landmarks([volume, volume * 1.0001], [mask, mask])
    matched = match_histogram(volume * 2.5 + 10.0 * mask, mask, landmarks)
    np.testing.assert_allclose(matched[mask], volume[mask], rtol=1e-3, atol=0.5)
    assert np.all(matched[~mask] == 0)  # outside the mask: unchanged

    save_landmarks(tmp_path / "landmarks.json", {"t1": landmarks, "flair": landmarks + 1})
    loaded = load_landmarks(tmp_path / "landmarks.json")
    np.testing.assert_allclose(loaded["t1"], landmarks)
    assert json.loads((tmp_path / "landmarks.json").read_text())["percentiles"] == list(DEFAULT_PERCENTILES)
    with pytest.raises(StudyError, match="percentiles"):
        load_landmarks(tmp_path / "landmarks.json", percentiles=(5, 50, 95))


def test_landmarks_build_a_common_scale() -> None:
    """Two volumes on different intensity scales are brought onto one standard scale (Nyúl)."""
    a, mask = _brainish(2)
    b, _ = _brainish(3)
    b = b * 3.0 + 100.0 * mask
    landmarks = standard_landmarks([a, b], [mask, mask])
    ma, mb = match_histogram(a, mask, landmarks), match_histogram(b, mask, landmarks)
    pa, pb = np.percentile(ma[mask], DEFAULT_PERCENTILES), np.percentile(mb[mask], DEFAULT_PERCENTILES)
    np.testing.assert_allclose(pa, landmarks, rtol=1e-3)
    np.testing.assert_allclose(pb, landmarks, rtol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        match_histogram(a, None, landmarks)  # None: non-zero voxels


# --------------------------------------------------------------------------------------------------------------
# the atlas is a choice
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a registration of a real study
@pytest.mark.parametrize("atlas", ["sri24", "mni152"])
def test_a_study_registers_to_each_atlas_and_then_passes_through(atlas: str, shared_data: Path, tmp_path: Path) -> None:
    """The glioma case registered to SRI24 (its own space) and to nilearn's MNI152 2009a: on that atlas's lattice,
    on its brain; written out, it is then on the lattice and ``register: auto`` leaves it alone."""
    keys = ["t1", "flair"]
    paths = {k: v for k, v in glioma_paths(shared_data).items() if k in keys}
    coarse = StageSettings(shrink_factors=(8, 4, 2), smoothing_sigmas=(4.0, 2.0, 1.0), iterations=80, sampling=0.02)
    settings = RegistrationSettings(rigid=coarse, affine=coarse, rigid_starts=("moments",))
    steps = [LoadStudyd(keys=keys), RegisterToAtlasd(keys=keys, register=True, atlas=atlas, settings=settings)]
    data = Compose(steps)(dict(paths))
    grid = atlas_grid(atlas)
    assert grid.size == ((240, 240, 155) if atlas == "sri24" else (197, 233, 189))
    atlas_brain = sitk.GetArrayFromImage(load_atlas(atlas)).transpose(2, 1, 0) > 0
    for key in keys:
        assert data[key].shape == (1, *grid.size) and Grid.of_tensor(data[key]) == grid
    overlap = dice(data["t1"][0].numpy() > 0, atlas_brain)
    print(f"glioma case registered to {atlas}: brain Dice with the atlas brain {overlap:.3f}")
    assert overlap > 0.75  # measured with this coarse budget: 0.88 (SRI24), 0.81 (MNI152); a failure lands far below
    for key in keys:  # on the atlas lattice now: auto passes it through
        nib.save(nib.Nifti1Image(data[key][0].numpy(), data[key].affine.numpy()), tmp_path / f"{key}.nii.gz")
    files = {key: str(tmp_path / f"{key}.nii.gz") for key in keys}
    again = Compose([LoadStudyd(keys=keys), RegisterToAtlasd(keys=keys, atlas=atlas)])(files)
    assert "atlas_transform" not in again
    other = "mni152" if atlas == "sri24" else "sri24"
    assert needs_registration(files, atlas) is False and needs_registration(files, other) is True
