"""The multi-label task's parts: metrics against a hand-computed example, tuned thresholds,
losses, and the submission format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prep.builtin_tasks.multilabel.losses import MultiLabelLoss, auto_positive_weights, check_loss
from prep.builtin_tasks.multilabel.metrics import MIN_TUNING_IMAGES, MultiLabelMetrics
from prep.builtin_tasks.multilabel.predict import predictions_text, read_submission
from prep.errors import UsageError

from conftest import assert_metric_sums_over_two_ranks_equal_one_process


def _logits(probabilities) -> torch.Tensor:
    return torch.logit(torch.tensor(probabilities, dtype=torch.float32))


TRUTH = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 1]], dtype=torch.float32)
PROBABILITIES = [[0.9, 0.2, 0.6], [0.7, 0.1, 0.8], [0.3, 0.4, 0.55]]


def test_the_scores_of_a_hand_computed_example():
    metrics = MultiLabelMetrics(3, train=False)
    metrics.update(_logits(PROBABILITIES[:2]), TRUTH[:2])  # two batches add up as one
    metrics.update(_logits(PROBABILITIES[2:]), TRUTH[2:])
    scores = metrics.compute()
    # At 0.5: image 0 predicts tags 0 and 2 for truth 0 and 1 (tp 1, fp 1, fn 1): F2 = 5 / (5 + 4 + 1)
    # = 0.5 and F1 = 2 / 4 = 0.5; images 1 and 2 are exactly right (1 each). Planet's F2 is their mean.
    assert scores["f2"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["f1"] == pytest.approx((0.5 + 1 + 1) / 3)
    # Per tag: tag 0 right (F1 1), tag 1 never predicted (0), tag 2 two right and one wrong (0.8).
    assert scores["macro_f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    # AP: tag 0 ranks both positives first (1); tag 1's positive comes second (1/2); tag 2's
    # positives come first and third ((1 + 2/3) / 2).
    assert scores["per_tag_ap"] == pytest.approx([1.0, 0.5, (1 + 2 / 3) / 2])
    assert scores["map"] == pytest.approx((1 + 0.5 + (1 + 2 / 3) / 2) / 3)
    assert scores["per_tag_precision"][0] == 1.0 and scores["per_tag_precision"][1] is None
    assert scores["per_tag_precision"][2] == pytest.approx(2 / 3)
    assert scores["per_tag_recall"] == pytest.approx([1.0, 0.0, 1.0])
    assert scores["per_tag_images"] == [2, 1, 2] and scores["per_tag_predicted"] == [2, 0, 3]
    light = MultiLabelMetrics(3, train=True)
    light.update(_logits(PROBABILITIES), TRUTH)
    assert set(light.compute()) == {"f1", "f2", "macro_f1", "map"}


def test_an_image_with_no_tag_that_predicts_none_is_right_and_one_that_predicts_one_is_wrong():
    metrics = MultiLabelMetrics(2, train=True)
    metrics.update(_logits([[0.1, 0.2], [0.9, 0.2]]), torch.zeros(2, 2))
    assert metrics.compute()["f1"] == pytest.approx(0.5)


def _needs_tuning(images: int = 40):
    """Tag 0 is well calibrated; tag 1's positives score 0.30-0.45 and its negatives 0.05-0.20,
    so a threshold of 0.5 never predicts it."""
    g = torch.Generator().manual_seed(0)
    truth = (torch.rand(images, 2, generator=g) < 0.4).float()
    truth[:MIN_TUNING_IMAGES, 1] = 1
    p0 = torch.where(truth[:, 0] > 0, 0.6 + 0.3 * torch.rand(images, generator=g), 0.1 + 0.3 * torch.rand(images, generator=g))
    p1 = torch.where(truth[:, 1] > 0, 0.30 + 0.15 * torch.rand(images, generator=g), 0.05 + 0.15 * torch.rand(images, generator=g))
    return torch.logit(torch.stack([p0, p1], dim=1)), truth


def test_tuned_thresholds_beat_one_half_where_a_tag_needs_it():
    logits, truth = _needs_tuning()
    at_half = MultiLabelMetrics(2, train=False)
    at_half.update(logits, truth)
    plain = at_half.compute()
    assert plain["per_tag_recall"][1] == 0.0  # 0.5 never gives tag 1
    thresholds = plain["thresholds_f1"]
    negatives, positives = torch.sigmoid(logits[:, 1])[truth[:, 1] == 0], torch.sigmoid(logits[:, 1])[truth[:, 1] == 1]
    assert float(negatives.max()) < thresholds[1] <= float(positives.min())  # between its negatives and its positives
    assert thresholds[0] == pytest.approx(0.5, abs=0.11)  # a calibrated tag keeps about 0.5
    tuned = MultiLabelMetrics(2, train=False, thresholds=thresholds)
    tuned.update(logits, truth)
    better = tuned.compute()
    assert better["f1"] > plain["f1"] + 0.1 and better["f2"] > plain["f2"] + 0.1
    assert better["per_tag_recall"][1] == 1.0 and better["per_tag_precision"][1] == 1.0
    assert better["map"] == pytest.approx(plain["map"])  # AP needs no threshold


def test_a_tag_with_too_few_validation_images_keeps_one_half():
    logits, truth = _needs_tuning()
    truth[:, 1] = 0
    truth[: MIN_TUNING_IMAGES - 1, 1] = 1
    metrics = MultiLabelMetrics(2, train=False)
    metrics.update(logits, truth)
    assert metrics.compute()["thresholds_f1"][1] == 0.5 and metrics.compute()["thresholds_f2"][1] == 0.5


def test_the_losses_and_their_weights():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 0.3, 3.0]])
    truth = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert MultiLabelLoss()(logits, truth) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, truth)))
    weighted = MultiLabelLoss(positive_weights=[1.0, 3.0, 1.0])(logits, truth)
    by_hand = -(truth * torch.tensor([1.0, 3.0, 1.0]) * torch.nn.functional.logsigmoid(logits) + (1 - truth) * torch.nn.functional.logsigmoid(-logits)).mean()
    assert float(weighted) == pytest.approx(float(by_hand))
    easy = torch.tensor([[6.0, -6.0, 6.0], [-6.0, 6.0, 6.0]])  # confidently right: focusing shrinks the loss
    assert float(MultiLabelLoss("focal")(easy, truth)) < float(MultiLabelLoss()(easy, truth)) / 10
    # ASL focuses the "no"s only: easy negatives (p 0.05-0.12) cost next to nothing, easy "yes"es what BCE says.
    negatives = torch.tensor([[-3.0, -2.0], [-2.5, -3.0]])
    assert float(MultiLabelLoss("asl")(negatives, torch.zeros(2, 2))) < float(MultiLabelLoss()(negatives, torch.zeros(2, 2))) / 100
    assert float(MultiLabelLoss("asl")(easy, torch.ones(2, 3))) == pytest.approx(float(MultiLabelLoss()(easy, torch.ones(2, 3))), rel=1e-5)
    for name in ("focal", "asl"):
        assert float(MultiLabelLoss(name)(logits, truth)) > 0
    smoothed = MultiLabelLoss(label_smoothing=0.2)(logits, truth)
    target = truth * 0.8 + 0.1
    assert float(smoothed) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(logits, target)))
    with pytest.raises(UsageError, match="not a multi-label loss; use bce"):
        check_loss("ce")
    assert auto_positive_weights([50, 1, 0, 99], 100) == pytest.approx([1.0, 9.9498743710662, 1.0, 1.0])
    assert auto_positive_weights([1], 1000) == [10.0]


def test_a_submission_round_trips(tmp_path: Path):
    results = [(Path("test-jpg/test_0.jpg"), [0.9, 0.2, 0.6]), (Path("test-jpg/file_10.jpg"), [0.1, 0.1, 0.1]), (Path("x/test_2.jpg"), [0.5, 0.7, 0.0])]
    text = predictions_text(results, ["clear", "haze", "water"], (0.5, 0.5, 0.55), kaggle_submission=True)
    assert text.splitlines()[0] == "image_name,tags"
    path = tmp_path / "submission.csv"
    path.write_text(text)
    assert read_submission(path) == {"test_0": ("clear", "water"), "file_10": (), "test_2": ("clear", "haze")}
    own = predictions_text(results, ["clear", "haze", "water"], (0.5, 0.5, 0.55), kaggle_submission=False, clip=0.01)
    assert own.splitlines()[0] == "file,tags,clear,haze,water"
    assert own.splitlines()[3] == "x/test_2.jpg,clear haze,0.500000,0.700000,0.010000"
    assert own.splitlines()[1] == "test-jpg/test_0.jpg,clear water,0.900000,0.200000,0.600000"


def _two_tag_metrics() -> MultiLabelMetrics:
    return MultiLabelMetrics(2, train=False)


def _forty_images():
    return _needs_tuning(40)


@pytest.mark.slow
def test_the_scores_and_thresholds_over_two_gloo_ranks_equal_one_process(tmp_path: Path):
    assert_metric_sums_over_two_ranks_equal_one_process(_two_tag_metrics, _forty_images, tmp_path)


def test_a_models_thresholds_and_an_ensembles_mean_of_them():
    from prep.builtin_tasks.multilabel.task import model_thresholds

    one = {"classes": ["a", "b"], "config": {"monitor": None}, "task_state": {"thresholds_f1": [0.3, 0.7], "thresholds_f2": [0.2, 0.4]}}
    assert model_thresholds(one, None).values == (0.3, 0.7)
    assert model_thresholds({**one, "config": {"monitor": "valid_f2"}}, None).values == (0.2, 0.4)
    assert model_thresholds(one, 0.25).values == (0.25, 0.25)
    other = {"thresholds_f1": [0.5, 0.5], "thresholds_f2": [0.5, 0.5]}
    mean = model_thresholds({**one, "task_states": [one["task_state"], other]}, None)
    assert mean.values == pytest.approx((0.4, 0.6)) and "the mean of 2 models'" in mean.source
    untuned = model_thresholds({**one, "task_states": [one["task_state"], None]}, None)  # a member without them: 0.5
    assert untuned.values == (0.5, 0.5) and "no tuned thresholds" in untuned.source
    with pytest.raises(UsageError, match="between 0 and 1"):
        model_thresholds(one, 1.0)
