"""Shared test set-up: put the bundle on sys.path (as MONAI's bundle runner does) and the repository root (for
``benchmarks``, whose helpers tests share), and name the paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
SHARED = REPO.parent / "shared"

if str(BUNDLE) not in sys.path:  # `scripts`, as MONAI's bundle runner does
    sys.path.insert(0, str(BUNDLE))
if str(REPO) not in sys.path:  # `benchmarks` (its package puts the bundle there too)
    sys.path.append(str(REPO))


@pytest.fixture(scope="session")
def bundle_root() -> Path:
    return BUNDLE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real images in ../shared/data; tests that need them skip when the folder is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent")
    return path
