"""Every scheduler steps as documented: per epoch or per iteration, after a linear warmup."""

from __future__ import annotations

import math

import pytest
import torch

from prep.engine.schedulers import LRSchedule, ScheduleConfig
from prep.errors import UsageError


def run(name: str, epochs: int = 10, steps: int = 4, metrics=None, lambdas=None, **options) -> list[list[float]]:
    """The learning rate seen by every batch, epoch by epoch, for a base rate of 1.0."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = LRSchedule(optimizer, ScheduleConfig(name=name, epochs=epochs, steps_per_epoch=steps, **options), lambdas)
    seen = []
    for epoch in range(epochs):
        lrs = []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(metrics[epoch] if metrics else 1.0)
        seen.append(lrs)
    return seen


def per_epoch(seen):
    return [lrs[0] for lrs in seen]


def test_step_decays_every_step_size_epochs():
    assert per_epoch(run("step", epochs=16)) == pytest.approx([1.0] * 7 + [0.1] * 7 + [0.01] * 2)


def test_multistep_decays_at_milestones():
    assert per_epoch(run("multistep", milestones=(2, 5), gamma=0.5, epochs=7)) == pytest.approx([1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_exponential_decays_every_epoch():
    assert per_epoch(run("exponential", gamma=0.9, epochs=4)) == pytest.approx([1, 0.9, 0.81, 0.729])


def test_cosine_follows_the_cosine_per_epoch_and_is_constant_within_one():
    seen = run("cosine", epochs=8, min_lr=0.0)
    assert all(len(set(lrs)) == 1 for lrs in seen)
    assert per_epoch(seen) == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 8)) for e in range(8)])


def test_cosine_restarts_return_to_the_base_rate():
    lrs = per_epoch(run("cosine-restarts", restart_epochs=3, epochs=7))
    assert lrs[0] == lrs[3] == lrs[6] == pytest.approx(1.0)
    assert lrs[1] < 1 and lrs[2] < lrs[1]


def test_onecycle_steps_every_iteration_and_peaks_at_pct_start():
    flat = [lr for lrs in run("onecycle", epochs=5, steps=10, max_lr_factor=1.0, pct_start=0.3) for lr in lrs]
    assert len(set(flat[:10])) == 10  # changes within an epoch
    peak = flat.index(max(flat))
    assert abs(peak - 0.3 * 50) <= 1 and max(flat) == pytest.approx(1.0)
    assert flat[-1] < 1e-3


def test_plateau_decays_after_patience_epochs_without_improvement():
    metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8]
    lrs = per_epoch(run("plateau", epochs=8, metrics=metrics, patience=2, gamma=0.5))
    # bad epochs 2, 3, 4: more than `patience` (2) after epoch 4, so epoch 5 runs at half
    assert lrs == pytest.approx([1, 1, 1, 1, 1, 0.5, 0.5, 0.5])


def test_lambda_from_a_plugin():
    lambdas = {"halve-then-hold": lambda epochs: (lambda epoch: 0.5 if epoch >= epochs // 2 else 1.0)}
    assert per_epoch(run("lambda:halve-then-hold", epochs=4, lambdas=lambdas)) == pytest.approx([1, 1, 0.5, 0.5])
    with pytest.raises(UsageError, match="Unknown LR lambda"):
        run("lambda:missing", lambdas=lambdas)


def test_linear_warmup_then_the_scheduler_counts_from_the_end_of_warmup():
    seen = run("step", epochs=10, steps=4, warmup_epochs=1, step_size=3)
    assert seen[0] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert per_epoch(seen)[1:] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_warmup_before_onecycle():
    flat = [lr for lrs in run("onecycle", epochs=3, steps=10, warmup_epochs=0.5) for lr in lrs]
    assert flat[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert flat[5] < 0.2  # one-cycle starts low again, from its own beginning
    assert flat[-1] < 1e-3


def test_state_round_trip_resumes_the_same_sequence():
    param = torch.nn.Parameter(torch.zeros(1))
    make = lambda: torch.optim.SGD([param], lr=1.0)  # noqa: E731
    config = ScheduleConfig(name="cosine", epochs=6, steps_per_epoch=2, warmup_epochs=1)
    first_opt = make()
    first = LRSchedule(first_opt, config)
    for _ in range(3):
        first_opt.step()
        first.after_batch()
    first.after_epoch()
    state, opt_state = first.state_dict(), first_opt.state_dict()
    second_opt = make()
    second = LRSchedule(second_opt, config)
    second_opt.load_state_dict(opt_state)
    second.load_state_dict(state)
    for schedule in (first, second):
        for _ in range(4):
            schedule.optimizer.step()
            schedule.after_batch()
        schedule.after_epoch()
    assert first.lrs() == pytest.approx(second.lrs())


def test_none_keeps_the_rate_and_unknown_names_are_usage_errors():
    assert set(per_epoch(run("none", epochs=3))) == {1.0}
    with pytest.raises(UsageError, match="--scheduler"):
        run("linear")
