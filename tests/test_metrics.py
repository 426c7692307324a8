"""The evaluation metrics (paper Sec. 5.4) against scikit-learn and brute force, on small made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from scripts.curves import average_precision, best_dice, binary_curve, precision_recall, roc_auc
from scripts.metrics import Subject, binarize_label, dice, evaluate_all, evaluate_subjects, median_filtered
from scripts.postprocess import MedianFilter


def random_subjects(n: int = 3, shape: tuple[int, int, int] = (12, 10, 8), seed: int = 0) -> list[Subject]:
    """Subjects with a noisy map that is higher inside a box lesion, an ellipsoid brain mask, and ties in the map."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.9
    subjects = []
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        x, y, z = rng.integers(3, 6, size=3)
        label[x : x + 3, y : y + 3, z : z + 2] = 1
        a = rng.gamma(2.0, 1.0, size=shape) + 2.0 * label
        a = (np.round(a * 4) / 4).astype(np.float32) * (i + 1) * 1e-3  # ties, and a small raw scale
        subjects.append(Subject(name=f"s{i}", a=a * mask, label=label, mask=mask))
    return subjects


def pooled(subjects: list[Subject], size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Brain voxels of every subject (median-filtered with MedianFilter), min-max normalised over the test set."""
    scores, targets = [], []
    for s in subjects:
        a = s.a if size == 0 else MedianFilter(size)(torch.as_tensor(s.a)[None])[0].numpy()
        scores.append(a[s.mask])
        targets.append(s.label[s.mask] > 0.5)
    x = np.concatenate(scores).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())
    return x, np.concatenate(targets)


@pytest.mark.parametrize("size", [0, 3, 5])
def test_auprc_and_auroc_equal_sklearn_on_pooled_normalised_scores(size):
    subjects = random_subjects()
    scores, targets = pooled(subjects, size)
    m = evaluate_subjects(subjects, median_filter=size)
    assert m.auprc == pytest.approx(average_precision_score(targets, scores), abs=1e-12)
    assert m.auroc == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    assert m.prevalence == pytest.approx(targets.mean())


def test_curve_functions_equal_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(500), 1)
    targets = rng.random(500) < 0.3
    curve = binary_curve(scores, targets)
    assert average_precision(curve) == pytest.approx(average_precision_score(targets, scores), abs=1e-12)
    assert roc_auc(curve) == pytest.approx(roc_auc_score(targets, scores), abs=1e-12)
    precision, recall, _ = precision_recall(curve)
    assert precision[-1] == 1 and recall[-1] == 0 and recall[0] == 1


def brute_force_ceil_dice(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    best, best_t = -1.0, None
    for t in [*np.unique(scores), np.inf]:
        d = dice(scores >= t, targets)
        if d > best or (d == best and t > best_t):
            best, best_t = d, t
    return best, best_t


def test_ceil_dice_equals_brute_force_search():
    rng = np.random.default_rng(2)
    scores = np.round(rng.random(300) + 0.6 * (np.arange(300) < 40), 2)
    targets = np.arange(300) < 40
    assert best_dice(binary_curve(scores, targets)) == pytest.approx(brute_force_ceil_dice(scores, targets))


def test_pooled_ceil_dice_on_the_test_set():
    subjects = random_subjects()
    scores, targets = pooled(subjects)
    m = evaluate_subjects(subjects)
    want, threshold = brute_force_ceil_dice(scores, targets)
    assert m.ceil_dice_pooled == pytest.approx(want) and m.ceil_threshold_pooled == pytest.approx(threshold)


def test_paper_ceil_dice_is_the_best_mean_of_per_subject_dice_on_the_grid():
    """Against a direct computation: every threshold of the authors' grid, each subject's Dice of score > t, the mean
    over subjects, the best mean; per-subject Dice at that threshold."""
    subjects = random_subjects(n=4, seed=7)
    scores, targets = pooled(subjects)
    grid = [round(t, 3) for t in np.arange(0.01, 0.3, 0.001)]
    bounds = np.cumsum([0, *[int(s.mask.sum()) for s in subjects]])
    parts = [(scores[a:b], targets[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    means = [np.mean([dice(x > t, y) for x, y in parts]) for t in grid]
    best = int(np.argmax(means))
    m = evaluate_subjects(subjects, ceil_grid=(0.01, 0.3, 0.001))
    assert m.ceil_dice == pytest.approx(means[best]) and m.ceil_threshold == pytest.approx(grid[best])
    for (x, y), sm, s in zip(parts, m.subjects, subjects, strict=True):
        assert sm.dice_ceil == pytest.approx(dice(x > grid[best], y))
        assert sm.brain_voxels == int(s.mask.sum()) and sm.label_voxels == int(s.label[s.mask].sum())
    lo, hi = min(s.a[s.mask].min() for s in subjects), max(s.a[s.mask].max() for s in subjects)
    assert m.ceil_threshold_raw == pytest.approx(lo + grid[best] * (hi - lo))
    # every subject weighs the same: not the pooled figure when lesions differ in size
    assert m.ceil_dice != pytest.approx(m.ceil_dice_pooled)


def test_voxel_sets_volume_and_brain():
    """volume: every voxel pooled, the map as given (not masked); brain: the brain voxels, the map masked first."""
    subjects = random_subjects(n=2, seed=8)
    unmasked = [Subject(s.name, s.a + 0.5 * (~s.mask), s.label, s.mask) for s in subjects]  # bright background
    brain = evaluate_subjects(unmasked, voxel_set="brain")
    assert brain.summary() | {"voxel_set": "x"} == evaluate_subjects(subjects).summary() | {"voxel_set": "x"}
    volume = evaluate_subjects(unmasked, voxel_set="volume")
    x = np.concatenate([s.a.ravel() for s in unmasked])
    y = np.concatenate([(s.label.astype(bool) & s.mask).ravel() for s in unmasked])
    assert volume.auprc == pytest.approx(average_precision_score(y, (x - x.min()) / (x.max() - x.min())), abs=1e-12)
    assert volume.prevalence == pytest.approx(y.mean()) and volume.prevalence < brain.prevalence
    with pytest.raises(ValueError, match="voxel_set"):
        evaluate_subjects(subjects, voxel_set="head")


def test_guard_rejects_a_segmentation_of_most_of_the_brain():
    """A flat map with a tiny lesion: Yen marks much of the brain; with the guard the segmentation counts as empty."""
    rng = np.random.default_rng(9)
    shape = (20, 20, 20)
    label = np.zeros(shape, np.uint8)
    label[9:11, 9:11, 9:11] = 1
    a = rng.gamma(4.0, 1.0, size=shape).astype(np.float32) + 0.5 * label
    s = Subject("flat", a, label, np.ones(shape, bool))
    raw = evaluate_subjects([s])
    assert raw.subjects[0].segmented_fraction > 0.05 and not raw.subjects[0].rejected
    limit = raw.subjects[0].segmented_fraction / 2
    guarded = evaluate_subjects([s], max_segmented_fraction=limit)
    assert guarded.rejected == 1 and guarded.subjects[0].rejected and guarded.dice_yen == 0.0
    assert guarded.subjects[0].segmented_fraction == pytest.approx(raw.subjects[0].segmented_fraction)
    assert guarded.segmented_fraction_median == pytest.approx(raw.segmented_fraction_median)


def cube_subject(label: np.ndarray) -> Subject:
    """A 16^3 volume, all brain; map 1 on the cube [6, 10)^3 and 0.1 elsewhere."""
    a = np.full((16, 16, 16), 0.1, np.float32)
    a[6:10, 6:10, 6:10] = 1.0
    return Subject(name="cube", a=a, label=label, mask=np.ones(a.shape, bool))


def test_dice_yen_on_a_known_image():
    cube = np.zeros((16, 16, 16), np.uint8)
    cube[6:10, 6:10, 6:10] = 1
    # Yen separates the cube (64 voxels); one dilation by the 6-neighbourhood adds 6 faces of 16 voxels.
    grown = cube.copy()
    grown[5:11, 6:10, 6:10] = grown[6:10, 5:11, 6:10] = grown[6:10, 6:10, 5:11] = 1
    assert grown.sum() == 64 + 6 * 16
    assert evaluate_subjects([cube_subject(grown)]).subjects[0].dice_yen == pytest.approx(1.0)
    m = evaluate_subjects([cube_subject(cube)])
    assert m.dice_yen == pytest.approx(2 * 64 / (64 + 160))
    assert m.ceil_dice == pytest.approx(1.0) and m.auprc == pytest.approx(1.0) and m.auroc == pytest.approx(1.0)
    assert evaluate_subjects([cube_subject(cube)], dilation_radius=0).dice_yen == pytest.approx(1.0)


def test_soft_labels_count_above_one_half():
    assert binarize_label(np.array([0.0, 0.4, 0.5, 0.51, 0.9, 1.0])).tolist() == [0, 0, 0, 1, 1, 1]
    soft = np.zeros((16, 16, 16), np.float32)
    soft[6:10, 6:10, 6:10] = 0.8
    soft[0:4, 0:4, 0:4] = 0.3  # below one half: healthy
    m = evaluate_subjects([cube_subject(soft)], dilation_radius=0)
    assert m.subjects[0].label_voxels == 64 and m.ceil_dice == pytest.approx(1.0)


def test_brats_labels_1_2_4_count_as_one():
    subjects = random_subjects(seed=3)
    multi = []
    for s in subjects:
        label = s.label.astype(np.uint8) * np.random.default_rng(0).choice([1, 2, 4], size=s.label.shape)
        multi.append(Subject(name=s.name, a=s.a, label=label.astype(np.uint8), mask=s.mask))
    assert set(np.unique(multi[0].label)) == {0, 1, 2, 4}
    for a, b in zip(evaluate_all(subjects), evaluate_all(multi), strict=True):
        assert a.summary() == b.summary()


def test_median_filter_variants():
    subjects = random_subjects(seed=4)
    results = evaluate_all(subjects)
    assert [m.median_filter for m in results] == [0, 3, 5]
    for size, m in zip((0, 3, 5), results, strict=True):
        filtered = [Subject(s.name, median_filtered(s.a, size), s.label, s.mask) for s in subjects]
        assert evaluate_subjects(filtered).summary() | {"median_filter": size} == m.summary()
    # an isolated bright voxel outranks the lesion without filtering; the 3D median filter removes it
    label = np.zeros((16, 16, 16), np.uint8)
    label[6:10, 6:10, 6:10] = 1
    s = cube_subject(label)
    s.a[2, 2, 2] = 5.0
    off = evaluate_subjects([s])
    assert off.auprc < 1.0 and off.ceil_threshold_pooled == pytest.approx(0.9 / 4.9)  # the spike ranks above
    np.testing.assert_array_equal(median_filtered(s.a, 0), s.a)
    assert median_filtered(s.a, 3)[2, 2, 2] == pytest.approx(0.1)
    assert median_filtered(s.a, 5)[8, 8, 8] == pytest.approx(1.0)


def test_subject_without_lesion_is_left_out_of_dice_means():
    subjects = random_subjects(n=2, seed=5)
    subjects.append(Subject("healthy", subjects[0].a, np.zeros_like(subjects[0].label), subjects[0].mask))
    m = evaluate_subjects(subjects)
    assert np.isnan(m.subjects[-1].dice_yen) and np.isnan(m.subjects[-1].dice_ceil)
    assert m.dice_yen == pytest.approx(np.mean([s.dice_yen for s in m.subjects[:2]]))
    assert np.isfinite(m.auprc)


def test_mismatched_shapes_are_refused():
    s = random_subjects(n=1)[0]
    with pytest.raises(ValueError, match="s0"):
        evaluate_subjects([Subject(s.name, s.a[:-1], s.label, s.mask)])
