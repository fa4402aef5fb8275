"""Split sizes: property tests over the splitters, and the too-small-class message."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prep.errors import TooFewSamplesError, UsageError
from prep.split.splitters import SplitRequest, SplitSize, Unit, random_split, stratified_split


def units_from(class_sizes: list[int]) -> list[Unit]:
    return [Unit(f"c{c}/{i}", f"c{c}", 1) for c, n in enumerate(class_sizes) for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(
    class_sizes=st.lists(st.integers(3, 200), min_size=1, max_size=6),
    valid=st.floats(0.01, 0.45),
    test=st.one_of(st.just(0.0), st.floats(0.01, 0.45)),
    seed=st.integers(0, 2**32),
)
def test_fractions_are_kept_per_class(class_sizes, valid, test, seed):
    units = units_from(class_sizes)
    request = SplitRequest(SplitSize(valid, False), SplitSize(test, False))
    assigned = stratified_split(units, request, seed)
    # every unit gets exactly one split, so the multiset of files is unchanged
    assert len(assigned) == len(units)
    assert set(assigned) <= {"train", "valid", "test"}
    per_class = Counter((u.label, s) for u, s in zip(units, assigned))
    for c, n in enumerate(class_sizes):
        label = f"c{c}"
        assert sum(per_class[(label, s)] for s in ("train", "valid", "test")) == n
        assert abs(per_class[(label, "valid")] - n * valid) < 1 + 1e-9
        if test:
            assert abs(per_class[(label, "test")] - n * test) < 1 + 1e-9
        else:
            assert per_class[(label, "test")] == 0
        assert per_class[(label, "train")] >= 1


@settings(max_examples=200, deadline=None)
@given(
    class_sizes=st.lists(st.integers(2, 300), min_size=1, max_size=5),
    share=st.floats(0.05, 0.5),
    seed=st.integers(0, 1000),
)
def test_counts_are_shared_in_proportion(class_sizes, share, seed):
    units = units_from(class_sizes)
    total = len(units)
    count = max(len(class_sizes), int(total * share))
    request = SplitRequest(SplitSize(count, True), SplitSize(0, False))
    assigned = stratified_split(units, request, seed)
    per_class = Counter(u.label for u, s in zip(units, assigned) if s == "valid")
    for c, n in enumerate(class_sizes):
        assert abs(per_class[f"c{c}"] - count * n / total) < 1 + 1e-9


def test_same_seed_same_split_and_different_seed_differs():
    units = units_from([50, 50])
    request = SplitRequest(SplitSize(0.2, False), SplitSize(0.1, False))
    assert stratified_split(units, request, 7) == stratified_split(list(units), request, 7)
    assert stratified_split(units, request, 7) != stratified_split(units, request, 8)


def test_order_of_input_does_not_matter():
    units = units_from([30, 20])
    request = SplitRequest(SplitSize(0.2, False), SplitSize(0, False))
    forward = dict(zip((u.key for u in units), stratified_split(units, request, 1)))
    backward = dict(zip((u.key for u in reversed(units)), stratified_split(list(reversed(units)), request, 1)))
    assert forward == backward


def test_groups_stay_whole_and_random_splitter_ignores_classes():
    units = [Unit(f"g{i}", "a" if i % 3 else "b", 4) for i in range(30)]
    request = SplitRequest(SplitSize(0.2, False), SplitSize(0, False))
    assigned = random_split(units, request, 0)
    valid_files = sum(u.size for u, s in zip(units, assigned) if s == "valid")
    assert abs(valid_files - 0.2 * 120) <= 4


def test_class_too_small_gets_a_clear_message():
    units = units_from([10]) + [Unit("tiny/0", "tiny", 1)]
    request = SplitRequest(SplitSize(0.2, False), SplitSize(0.1, False))
    with pytest.raises(TooFewSamplesError, match=r"'tiny' \(1\).*at least 3"):
        stratified_split(units, request, 0)


@pytest.mark.parametrize("text", ["1.0", "-0.1", "abc", "1.5", "nan"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(UsageError):
        SplitSize.parse(text, "--valid")


def test_sizes_parse_fraction_and_count():
    assert SplitSize.parse("0.2", "--valid") == SplitSize(0.2, False)
    assert SplitSize.parse("2000", "--valid") == SplitSize(2000, True)


def test_counts_larger_than_dataset_are_refused():
    with pytest.raises(UsageError, match="only 20"):
        stratified_split(units_from([10, 10]), SplitRequest(SplitSize(15, True), SplitSize(5, True)), 0)


@settings(max_examples=12, deadline=None)
@given(
    class_sizes=st.lists(st.integers(3, 12), min_size=1, max_size=3),
    valid=st.floats(0.1, 0.4),
    test=st.one_of(st.just(0.0), st.floats(0.1, 0.3)),
    seed=st.integers(0, 100),
)
def test_real_split_keeps_every_file_once_in_proportion(class_sizes, valid, test, seed):
    """The same properties, on a real folder split in place."""
    import tempfile
    from collections import Counter as Multiset
    from pathlib import Path

    from conftest import jpeg_bytes, snapshot, write
    from prep.split.api import split_dataset
    from prep.split.journal import JOURNAL_NAME
    from prep.split.plan import SplitOptions

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for c, n in enumerate(class_sizes):
            for i in range(n):
                write(root / "train" / f"c{c}.{i}.jpg", jpeg_bytes(c * 100 + i, size=(8, 8)))
        before = Multiset(snapshot(root).values())
        split_dataset(root, SplitOptions(valid=SplitSize(valid, False), test=SplitSize(test, False), seed=seed))
        after = {k: v for k, v in snapshot(root).items() if k != JOURNAL_NAME}
        assert Multiset(after.values()) == before  # every file exactly once
        placed = Multiset((k.split("/")[0], k.split("/")[1]) for k in after)
        for c, n in enumerate(class_sizes):
            assert sum(placed[(s, f"c{c}")] for s in ("train", "valid", "test")) == n
            assert abs(placed[("valid", f"c{c}")] - n * valid) < 1 + 1e-9
            assert abs(placed[("test", f"c{c}")] - n * test) < 1 + 1e-9
