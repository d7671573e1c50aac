import re
from collections import Counter

import numpy as np
import pytest

from finetune_pipeline.data.split import stratified_split
from finetune_pipeline.errors import PipelineError

NAMES = {0: "Sport (a)", 1: "Economy (b)", 2: "Tiny (c)"}


def test_split_is_stratified_disjoint_complete_and_seeded():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    train, val, test = stratified_split(labels, 0.8, 0.1, seed=1, names=NAMES)
    assert len(train) == 80 and len(val) == 10 and len(test) == 10
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    y = np.array(labels)
    assert Counter(y[train].tolist()) == {0: 48, 1: 24, 2: 8}
    for part in (val, test):
        assert set(y[part].tolist()) == {0, 1, 2}  # every class in every split
    again = stratified_split(labels, 0.8, 0.1, seed=1, names=NAMES)
    assert all((a == b).all() for a, b in zip((train, val, test), again))
    other = stratified_split(labels, 0.8, 0.1, seed=2, names=NAMES)
    assert not (other.train == train).all()


def test_class_too_small_to_stratify_is_named():
    with pytest.raises(PipelineError, match=r"'Tiny \(c\)' \(2\)"):
        stratified_split([0] * 50 + [1] * 50 + [2] * 2, 0.8, 0.1, seed=0, names=NAMES)


def test_splits_too_small_for_the_classes_fail_clearly():
    # 3 classes, 9 records: a 10% val split has 1 record, fewer than the classes
    with pytest.raises(PipelineError, match="cannot split 9 records of 3 classes"):
        stratified_split([0, 0, 0, 1, 1, 1, 2, 2, 2], 0.8, 0.1, seed=0, names=NAMES)


def test_split_by_files_keeps_the_parts_own_split():
    from finetune_pipeline.data.split import split_by_files

    files = ["part-1-train.json", "part-3-test.json", "part-2-validation.json", "part-1-train.json", "dev.jsonl"]
    train, val, test = split_by_files(files, [0, 0, 0, 0, 0], {0: "a"})
    assert train.tolist() == [0, 3] and val.tolist() == [2, 4] and test.tolist() == [1]


@pytest.mark.parametrize(
    "name, split",
    [
        ("news.train.jsonl", "train"),
        ("train_intervals.json", "train"),
        ("part-1_DEV.JSON", "val"),
        ("valid.jsonl", "val"),
        ("my test set.json", "test"),
        ("training-2024.json", "train"),
    ],
)
def test_split_words_are_whole_words_of_the_name(name, split):
    from finetune_pipeline.data.split import split_of_file

    assert split_of_file(name) == split


@pytest.mark.parametrize(
    "name, message",
    [
        ("latest.json", "latest.json has no split word"),  # "test" inside a word does not count
        ("intervals.json", "intervals.json has no split word"),  # nor "val"
        ("contest_devices.json", "has no split word"),
        ("train_test.json", "train_test.json names several splits (train, test)"),
    ],
)
def test_names_without_exactly_one_split_word_are_refused(name, message):
    from finetune_pipeline.data.split import split_of_file

    with pytest.raises(PipelineError, match=re.escape(message)):
        split_of_file(name)


@pytest.mark.parametrize(
    "files, message",
    [
        (["train.json", "test.json"], "no raw file for the val split"),
        (["train.json", "val.json", "extra.json"], "extra.json has no split word"),
    ],
)
def test_split_by_files_errors_name_the_files(files, message):
    from finetune_pipeline.data.split import split_by_files

    with pytest.raises(PipelineError, match=message):
        split_by_files(files, [0] * len(files), {0: "a"})


def test_split_by_files_refuses_a_class_missing_from_a_split():
    from finetune_pipeline.data.split import split_by_files

    files = ["train.json", "train.json", "val.json", "val.json", "test.json"]
    with pytest.raises(PipelineError, match=r"data.split=files: the test split has no record of 'Sport \(b\)'"):
        split_by_files(files, [0, 1, 0, 1, 0], {0: "Economy (a)", 1: "Sport (b)"})


@pytest.mark.parametrize("rare, seed", [(3, 0), (3, 7), (4, 1), (5, 42)])
def test_a_rare_class_is_validated_and_tested(rare, seed):
    """1000 records of one class, 3 of another: a plain stratified split puts all 3 into train."""
    labels = [0] * 1000 + [1] * rare
    train, val, test = stratified_split(labels, 0.8, 0.1, seed=seed, names=NAMES)
    y = np.asarray(labels)
    for part in (train, val, test):
        assert set(y[part].tolist()) == {0, 1}
    assert sorted([*train, *val, *test]) == list(range(len(labels)))  # a partition: nothing lost or doubled
    assert (y[train] == 1).sum() == rare - 2
    again = stratified_split(labels, 0.8, 0.1, seed=seed, names=NAMES)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))  # fixed by the seed
