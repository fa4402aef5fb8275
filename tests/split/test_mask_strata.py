"""prep split of image/mask pairs stratifies by the classes each mask holds, so that a rare
class reaches the validation split whenever enough masks hold it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.split.mask_strata import COMMON, mask_strata

runner = CliRunner()


def _raw_pairs(root: Path, count: int, rare: dict[int, list[int]]) -> Path:
    """``count`` pairs whose masks all hold class 1; ``rare`` class id -> the pairs holding it."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        mask = np.zeros((24, 24), np.uint8)
        mask[2:8, 2:8] = 1
        for class_id, holders in rare.items():
            if i in holders:
                mask[10 + class_id : 14 + class_id, 10:14] = class_id
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


def test_each_unit_is_stratified_by_its_rarest_class_that_can_be_split():
    units = [(0, 1)] * 20 + [(0, 1, 2)] * 3 + [(0, 1, 3)]  # class 3 in one mask only
    strata = mask_strata(units, needed=2)
    assert strata[:20] == ["0"] * 20  # 0 and 1 tie; the lowest id
    assert strata[20:23] == ["2"] * 3
    assert strata[23] == "0"  # class 3 cannot reach two splits: its next rarest class
    # Class 3 is left two masks by class 2 (the mask holding both goes to 2): too few for
    # three splits, so they go with the common pairs, which are too few alone and join 2.
    assert mask_strata([(1, 2), (1, 2), (1, 3), (1, 3), (1, 2, 3)], needed=3) == ["2"] * 5
    assert mask_strata([(), (), (1,), (1,), (1,)], needed=3) == ["1"] * 5  # a short common stratum joins the largest
    assert mask_strata([(), (), ()], needed=2) == [COMMON] * 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_rare_class_reaches_validation_whatever_the_seed(tmp_path: Path, seed: int):
    raw = _raw_pairs(tmp_path / "raw", 40, {2: [5, 21, 33]})
    result = runner.invoke(app, ["split", str(raw), "--out", str(tmp_path / "out"), "--valid", "0.2", "--seed", str(seed), "--json"])
    assert result.exit_code == 0, result.output
    holding = [p for p in (tmp_path / "out" / "valid" / "masks").iterdir() if 2 in np.unique(np.asarray(Image.open(p)))]
    assert 1 <= len(holding) <= 2  # about a fifth of three, and at least one
    assert json.loads(result.stdout)["missing_classes"] == {}  # every split holds every class


def test_a_class_too_rare_for_every_split_is_named_in_one_line(tmp_path: Path):
    raw = _raw_pairs(tmp_path / "raw", 30, {2: [4, 17, 23], 3: [9]})
    result = runner.invoke(app, ["split", str(raw), "--out", str(tmp_path / "out"), "--valid", "0.2"])
    assert result.exit_code == 0, result.output
    lacking = [line for line in result.output.splitlines() if "holds no mask of" in line]
    assert lacking == ["valid holds no mask of class 3: too few masks hold it to reach every split, so its scores there will be n/a"]
