"""The parts of segmentation, against hand-computed values: class tables, every mask format,
losses, metrics (also summed over two Gloo ranks), run-length encoding, TTA and tiling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import assert_metric_sums_over_two_ranks_equal_one_process

from prep.errors import ClassTableError, MaskError, UsageError
from prep.masks.class_table import parse_class_table
from prep.builtin_tasks.segmentation.losses import SegmentationLoss, parse_loss
from prep.masks.read import IGNORE_INDEX, ClassMapping, mask_ids
from prep.masks.scan import check_mask_ids, mapping_for, scan_masks
from prep.builtin_tasks.segmentation.metrics import SegmentationMetrics
from prep.builtin_tasks.segmentation.predict import predict_probabilities, predict_tiled
from prep.masks.rle import rle_decode, rle_encode

TABLE = parse_class_table("id,name,r,g,b\n0,background,0,0,0\n1,road,128,64,128\n2,car,0,0,142\n255,ignore,255,255,255\n", "classes.csv")


# Class tables ---------------------------------------------------------------------------


def test_class_table_orders_by_id_and_keeps_colours_and_the_ignore_row():
    table = parse_class_table("2,car,0,0,142\n0,background,0,0,0\n1,road,128,64,128\n", "t.csv")
    assert table.ids == (0, 1, 2) and table.names == ("background", "road", "car")
    assert table.colours[2] == (0, 0, 142) and table.ignore is None
    assert TABLE.ignore == 255 and TABLE.ignore_colour == (255, 255, 255)


@pytest.mark.parametrize("text, message", [
    ("0,background\n0,car\n", "the id 0 appears more than once"),
    ("0,background\n", "lists 1 class"),
    ("0,background\n1,car,1,2\n", "row 2 (1,car,1,2): a row is id,name or id,name,r,g,b"),
    ("0,background\nx,car\n", "the id must be a whole number, not 'x'"),
    ("0,background,0,0,0\n1,car\n", "give r,g,b for every class or for none"),
    ("0,background,0,0,0\n1,car,0,0,0\n", "the colour (0, 0, 0) belongs to more than one class"),
    ("0,background,0,0,300\n1,car,1,1,1\n", "a colour must be between 0 and 255, not 300"),
])
def test_class_table_errors_name_the_file_and_row(text: str, message: str):
    with pytest.raises(ClassTableError, match=None) as info:
        parse_class_table(text, "my/classes.csv")
    assert str(info.value).startswith("my/classes.csv") and message in str(info.value)


# Every mask format -> the same ids --------------------------------------------------------

SHAPE = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 0, 0]])


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


@pytest.mark.parametrize("kind", ["L-0-255", "L-0-1", "1-bit", "bool-npy-png", "palette-png", "gif", "I16", "rgb-grey"])
def test_binary_masks_in_any_format_read_as_0_and_1(tmp_path: Path, kind: str):
    binary = (SHAPE > 0).astype(np.uint8)
    if kind == "L-0-255":
        path = _save(tmp_path / "m.png", Image.fromarray(binary * 255, "L"))
    elif kind == "L-0-1":
        path = _save(tmp_path / "m.png", Image.fromarray(binary, "L"))
    elif kind == "1-bit":
        path = _save(tmp_path / "m.png", Image.fromarray(binary.astype(bool)))
    elif kind == "bool-npy-png":
        path = _save(tmp_path / "m.png", Image.fromarray(binary * 255).convert("1"))
    elif kind == "palette-png":
        image = Image.fromarray(binary, "P")
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        path = _save(tmp_path / "m.png", image)
    elif kind == "gif":  # Carvana's masks are GIFs
        image = Image.fromarray(binary, "P")
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        path = _save(tmp_path / "m.gif", image)
    elif kind == "I16":
        path = _save(tmp_path / "m.png", Image.fromarray(binary.astype(np.uint16)))
    else:
        path = _save(tmp_path / "m.png", Image.fromarray(np.stack([binary * 255] * 3, axis=-1), "RGB"))
    assert mask_ids(path).tolist() == binary.tolist()


def test_class_id_and_palette_masks_keep_their_ids(tmp_path: Path):
    assert mask_ids(_save(tmp_path / "ids.png", Image.fromarray(SHAPE.astype(np.uint8), "L"))).tolist() == SHAPE.tolist()
    palette = Image.fromarray(SHAPE.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 128, 64, 128, 0, 0, 142] + [0] * 759)
    assert mask_ids(_save(tmp_path / "pal.png", palette), TABLE).tolist() == SHAPE.tolist()


def test_colour_coded_masks_are_decoded_through_the_table(tmp_path: Path):
    colours = np.array([(0, 0, 0), (128, 64, 128), (0, 0, 142)], dtype=np.uint8)
    rgb = colours[SHAPE]
    rgb[2, 3] = (255, 255, 255)  # the ignore colour
    ids = mask_ids(_save(tmp_path / "c.png", Image.fromarray(rgb, "RGB")), TABLE)
    expected = SHAPE.copy()
    expected[2, 3] = 255
    assert ids.tolist() == expected.tolist()
    indices = ClassMapping(TABLE.ids, TABLE.ignore).indices(ids, tmp_path / "c.png")
    assert indices[2, 3] == IGNORE_INDEX and indices[1, 1] == 2


def test_colour_masks_without_a_table_or_with_an_unknown_colour_are_refused_by_name(tmp_path: Path):
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[0, 0] = (10, 200, 30)
    path = _save(tmp_path / "odd.png", Image.fromarray(rgb, "RGB"))
    with pytest.raises(MaskError, match=r"odd\.png is a colour-coded mask \(2 colours\).*r,g,b"):
        mask_ids(path)
    with pytest.raises(MaskError, match=r"odd\.png has 1 colour that classes.csv does not list, such as \(10,200,30\) x1"):
        mask_ids(path, TABLE)


def test_out_of_range_values_are_named_with_their_files(tmp_path: Path):
    good = _save(tmp_path / "good.png", Image.fromarray(np.array([[0, 1]], dtype=np.uint8)))
    bad = _save(tmp_path / "bad.png", Image.fromarray(np.array([[0, 7]], dtype=np.uint8)))
    table = parse_class_table("0,background\n1,car\n", "t.csv")
    scan = scan_masks([str(good), str(bad)], table)
    with pytest.raises(MaskError, match=r"not the classes of t.csv \(ids 0 to 1\): 7 in .*bad\.png"):
        check_mask_ids(scan, mapping_for(table, scan), table)
    with pytest.raises(MaskError, match=r"bad\.png holds the value 7"):
        ClassMapping((0, 1)).indices(mask_ids(bad), bad)


def test_255_beside_class_ids_without_a_table_asks_for_one(tmp_path: Path):
    path = _save(tmp_path / "voc.png", Image.fromarray(np.array([[0, 1, 2, 255]], dtype=np.uint8)))
    with pytest.raises(MaskError, match=r"0, 1, 2 and 255 .*voc\.png.*255,ignore"):
        mapping_for(None, scan_masks([str(path)], None))


def test_an_unreadable_mask_is_named(tmp_path: Path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    scan = scan_masks([str(path)], None)
    with pytest.raises(MaskError, match=r"Cannot read the mask .*broken\.png"):
        check_mask_ids(scan, mapping_for(None, scan), None)


# Losses, by hand ------------------------------------------------------------------------


def _binary(logits: list[list[float]], truth: list[list[int]]):
    return torch.tensor(logits).view(1, 1, *np.shape(logits)), torch.tensor(truth).view(1, *np.shape(truth))


def test_binary_dice_loss_matches_the_hand_computed_value():
    # Logits 0 -> p = 0.5 everywhere on a 2 x 2 image with one foreground pixel:
    # tp = 0.5, fp = 1.5, fn = 0.5; Dice = (2 * 0.5 + 1) / (2 * 0.5 + 1.5 + 0.5 + 1) = 2 / 4.
    logits, truth = _binary([[0.0, 0.0], [0.0, 0.0]], [[1, 0], [0, 0]])
    assert SegmentationLoss("dice")(logits, truth).item() == pytest.approx(0.5)
    # BCE at p = 0.5 is log 2 for every pixel; dice + bce adds them.
    assert SegmentationLoss("bce")(logits, truth).item() == pytest.approx(math.log(2))
    assert SegmentationLoss("0.5*dice+2*bce")(logits, truth).item() == pytest.approx(0.25 + 2 * math.log(2))
    assert SegmentationLoss()(logits, truth).item() == pytest.approx(0.5 + math.log(2))  # default dice+bce


def test_an_empty_prediction_on_an_empty_mask_is_a_perfect_dice_and_tversky():
    logits, truth = _binary([[-30.0, -30.0], [-30.0, -30.0]], [[0, 0], [0, 0]])
    assert SegmentationLoss("dice")(logits, truth).item() == pytest.approx(0.0, abs=1e-6)
    assert SegmentationLoss("tversky")(logits, truth).item() == pytest.approx(0.0, abs=1e-6)


def test_focal_and_tversky_match_the_hand_computed_values():
    # One foreground pixel with logit 0: p_true = 0.5, focal = 0.25 * log 2.
    logits, truth = _binary([[0.0]], [[1]])
    assert SegmentationLoss("focal")(logits, truth).item() == pytest.approx(0.25 * math.log(2))
    # tp = 0.5, fn = 0.5, fp = 0: Tversky = (0.5 + 1) / (0.5 + 0.7 * 0.5 + 1) = 1.5 / 1.85.
    assert SegmentationLoss("tversky")(logits, truth).item() == pytest.approx(1 - 1.5 / 1.85)


def test_multiclass_losses_ignore_pixels_and_weigh_classes():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 2, 0, 0] = math.log(2)  # pixel 0: p = (1/4, 1/4, 1/2)
    truth = torch.tensor([[[2, IGNORE_INDEX]]])
    assert SegmentationLoss("ce")(logits, truth).item() == pytest.approx(-math.log(0.5))
    # Dice per class over the one valid pixel (smooth 1): class 0 and 1: 1 / (0.25 + 1), class 2: (1 + 1) / (0.5 + 1 + 1).
    per_class = [1 / 1.25, 1 / 1.25, 2 / 2.5]
    assert SegmentationLoss("dice")(logits, truth).item() == pytest.approx(1 - sum(per_class) / 3)
    weighted = SegmentationLoss("dice", class_weights=[0, 0, 1])(logits, truth).item()
    assert weighted == pytest.approx(1 - per_class[2])
    # Weighted cross-entropy equals torch's own.
    truth2 = torch.tensor([[[2, 0]]])
    ours = SegmentationLoss("ce", class_weights=[1, 1, 3])(logits, truth2).item()
    assert ours == pytest.approx(F.cross_entropy(logits, truth2, weight=torch.tensor([1.0, 1, 3])).item())


def test_torchvision_outputs_add_half_the_auxiliary_loss():
    logits, truth = _binary([[0.0]], [[1]])
    plain = SegmentationLoss("bce")(logits, truth).item()
    assert SegmentationLoss("bce")({"out": logits, "aux": logits}, truth).item() == pytest.approx(1.5 * plain)


@pytest.mark.parametrize("spec", ["dice+lovasz", "2**dice", "", "dice+"])
def test_unknown_loss_terms_are_refused(spec: str):
    with pytest.raises(UsageError, match="is not a loss term"):
        parse_loss(spec)


# Metrics, by hand -----------------------------------------------------------------------


def _logits_for(classes: np.ndarray, count: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(classes), count).permute(0, 3, 1, 2).float() * 10


def test_metrics_match_hand_counts_and_per_image_dice():
    truth = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 0]], [[2, 2], [0, IGNORE_INDEX]]])
    predicted = np.array([[[0, 1], [0, 1]], [[0, 0], [0, 0]], [[2, 0], [1, 1]]])
    metrics = SegmentationMetrics(3, train=False)
    metrics.update(_logits_for(predicted, 3), truth)
    result = metrics.compute()
    # class 1: tp 2, fp 1 (image 3), fn 1 (image 1): IoU 2/4, Dice 4/6; class 2: tp 1, fn 1: IoU 1/2, Dice 2/3.
    assert result["per_class_iou"][1] == pytest.approx(0.5) and result["per_class_dice"][1] == pytest.approx(4 / 6)
    assert result["per_class_iou"][2] == pytest.approx(0.5) and result["per_class_dice"][2] == pytest.approx(2 / 3)
    assert result["iou"] == pytest.approx(0.5) and result["dice"] == pytest.approx((4 / 6 + 2 / 3) / 2)
    assert result["pixel_acc"] == pytest.approx(8 / 11)  # the ignored pixel counts nowhere
    # Per image: class 1 with tp 2, fn 1: 4/5; empty and predicted empty: 1;
    # class 1 (one fp) 0 and class 2 (tp 1, fn 1) 2/3: 1/3.
    assert result["image_dice"] == pytest.approx((4 / 5 + 1 + 1 / 3) / 3)


def test_a_binary_model_predicts_the_foreground_above_logit_zero():
    metrics = SegmentationMetrics(2, train=True)
    metrics.update(torch.tensor([[[[2.0, -1.0]]]]), torch.tensor([[[1, 1]]]))
    assert metrics.compute() == {"dice": pytest.approx(2 / 3), "iou": pytest.approx(0.5), "pixel_acc": pytest.approx(0.5)}


def test_a_class_never_present_nor_predicted_has_no_score_and_leaves_the_mean():
    metrics = SegmentationMetrics(3, train=False)
    metrics.update(_logits_for(np.array([[[0, 1]]]), 3), torch.tensor([[[0, 1]]]))
    result = metrics.compute()
    assert result["per_class_iou"] == [1.0, 1.0, None] and result["iou"] == 1.0


def _three_class_metrics() -> SegmentationMetrics:
    return SegmentationMetrics(3, train=False)


def _four_masks():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 5, 6, generator=generator), torch.randint(0, 3, (4, 5, 6), generator=generator)


@pytest.mark.slow
def test_metric_sums_over_two_gloo_ranks_equal_one_process(tmp_path: Path):
    assert_metric_sums_over_two_ranks_equal_one_process(_three_class_metrics, _four_masks, tmp_path)


# Run-length encoding ----------------------------------------------------------------------


def test_rle_of_a_known_mask_in_both_orders():
    mask = np.array([[0, 1, 1], [1, 0, 0]])
    # Row order: pixels 1..6 are 0 1 1 1 0 0 -> one run from 2, 3 long.
    assert rle_encode(mask, "row") == "2 3"
    # Column order: pixels down the columns are 0 1 | 1 0 | 1 0 -> runs at 2 (2 long) and 5 (1 long).
    assert rle_encode(mask, "column") == "2 2 5 1"
    assert rle_decode("2 2 5 1", (2, 3), "column").tolist() == mask.tolist()
    assert rle_encode(np.zeros((3, 3))) == ""


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1), st.sampled_from(["row", "column"]))
def test_rle_round_trips(height: int, width: int, seed: int, order: str):
    mask = np.random.default_rng(seed).integers(0, 2, (height, width)).astype(np.uint8)
    assert rle_decode(rle_encode(mask, order), (height, width), order).tolist() == mask.tolist()


def test_rle_decode_refuses_runs_outside_the_image():
    with pytest.raises(UsageError, match="outside a 2 x 2 image"):
        rle_decode("3 5", (2, 2))


# TTA and tiling ---------------------------------------------------------------------------


class PixelModel(torch.nn.Module):
    """A per-pixel model (1x1 convolution): its output at a pixel depends on that pixel only,
    so predicting in windows must give exactly what predicting whole gives."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)


def test_tiled_prediction_equals_whole_prediction_for_a_per_pixel_model():
    model = PixelModel().eval()
    image = torch.randn(1, 3, 70, 101)
    with torch.no_grad():
        whole = predict_probabilities(model, image)
        tiled = predict_tiled(model, image, tile=32, overlap=8, batch_size=3)
        small = predict_tiled(model, torch.randn(1, 3, 20, 25), tile=32, overlap=8)
    assert torch.allclose(whole, tiled, atol=1e-6)
    assert small.shape == (1, 3, 20, 25)


def test_flip_tta_averages_the_mirror_images_prediction():
    class LeftBright(torch.nn.Module):  # a model that is not mirror-symmetric
        def forward(self, x):
            ramp = torch.linspace(-2, 2, x.shape[-1]).view(1, 1, 1, -1)
            return (x[:, :1] + ramp)

    model, image = LeftBright(), torch.randn(1, 3, 4, 6)
    plain = torch.sigmoid(model(image))
    mirrored = torch.sigmoid(model(image.flip(-1))).flip(-1)
    assert torch.allclose(predict_probabilities(model, image, "flip"), (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored)


def test_a_mask_saved_at_another_size_is_read_at_its_images_size_nearest(tmp_path: Path):
    from prep.data.datasets import SegmentationDataset

    for folder in ("images", "masks"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "train" / "images" / "a.png")
    half = np.zeros((20, 30), dtype=np.uint8)
    half[5:15, 10:20] = 255
    Image.fromarray(half, "L").save(tmp_path / "train" / "masks" / "a.png")
    _, mask = SegmentationDataset(tmp_path, "train")[0]
    assert tuple(mask.shape) == (40, 60) and set(mask.unique().tolist()) == {0, 1}
    assert mask[10:30, 20:40].all() and mask.sum() == 20 * 20
