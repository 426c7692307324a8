"""benchmarks/modality_sets.py's report, on made evaluation files: the 'beside the best' table names the set of the
highest AUPRC per family and gives the others as fractions of it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.faithful import FAMILIES
from benchmarks.modality_sets import relative_section


def _evaluation(folder: Path, auprc: float) -> Path:
    folder.mkdir(parents=True)
    row = {"voxel_set": "volume", "median_filter": 5, "auprc": auprc, "prevalence": 0.001, "ceil_dice": 0.1}
    (folder / "metrics.json").write_text(json.dumps({"metrics": [row]}))
    return folder


def test_each_set_is_given_as_a_fraction_of_the_best_one(tmp_path: Path) -> None:
    args = argparse.Namespace(voxel_set="volume", median_filter=5)
    sets = {"a": ["t1"], "b": ["flair"]}
    # family 0: b is best (a at 0.25); every other family: a is best (b at 0.5); b's two runs average to 0.4
    outs = {}
    for i, family in enumerate(FAMILIES):
        a, b = (0.1, (0.3, 0.5)) if i == 0 else (0.8, (0.3, 0.5))
        outs["a", family] = [_evaluation(tmp_path / f"a_{family}", a)]
        outs["b", family] = [_evaluation(tmp_path / f"b_{family}_{k}", v) for k, v in enumerate(b)]
    text = "\n".join(relative_section(args, sets, outs)).splitlines()
    table = [line for line in text if line.startswith("| ") and "---" not in line]
    assert table[0] == "| family | best set | a | b |"
    rows = [line.split(" | ") for line in table[1:]]
    assert [r[1] for r in rows] == ["b"] + ["a"] * (len(FAMILIES) - 1)
    assert rows[0][2:] == ["0.25", "1.00 |"]
    assert all(r[2:] == ["1.00", "0.50 |"] for r in rows[1:])
