"""benchmarks/authors_equiv.py: the copy of the bundle that ``../shared/tools/authors_equiv/compare.py`` reads must
hold every config id and bundle function that the tool asks for, under the names it uses."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from benchmarks.authors_equiv import bundle_copy

# What compare.py reads from configs/common.yaml and imports from the bundle's scripts (read off the tool).
CONFIG_IDS = ("network_def", "scheduler", "image_size", "weights", "network_preset", "schedule")
PRE_STEPS = ("scale", "antialias", "resize")
NAMES = {
    "scripts.diffusion": (
        "DiffusionRange",
        "ScheduleTerms",
        "deviation",
        "deviation_from_noise",
        "mu_q",
        "mu_theta",
        "q_sample",
        "schedule_terms",
    ),
    "scripts.reference": ("reference_slices",),
    "scripts.scoring": ("ANDiInferer",),
    "scripts.intensity": ("brain_mask",),
    "scripts.metrics": ("CEIL_GRID", "Subject", "dice_at_thresholds", "evaluate_subjects", "minmax_normalise"),
    "scripts.postprocess": ("MedianFilter", "ReduceChannels", "yen_segmentation"),
    "scripts.noise": ("get_noise_fn",),
    "scripts.checkpoints": ("load_network",),
}


def test_the_copy_reads_common_yaml_as_the_inference_config(bundle_root: Path, tmp_path: Path) -> None:
    copy = bundle_copy(bundle_root, tmp_path)
    common = copy / "configs" / "common.yaml"
    assert common.is_symlink() and common.resolve() == (copy / "configs" / "inference.yaml").resolve()
    parser = ConfigParser()
    parser.read_config(str(common))
    parser["bundle_root"] = str(copy)
    for key in CONFIG_IDS:
        assert key in parser, key
    for step in PRE_STEPS:
        assert f"pre#{step}" in parser, step
    assert int(parser["image_size"]) == 128
    assert not (bundle_root / "configs" / "common.yaml").exists()  # the bundle itself is left as it is


@pytest.mark.parametrize("module", sorted(NAMES))
def test_the_bundle_has_what_the_tool_imports(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in NAMES[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lacks {missing}"
