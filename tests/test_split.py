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
    assert not (other[0] == train).all()


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
    train, val, test = split_by_files(files)
    assert train.tolist() == [0, 3] and val.tolist() == [2, 4] and test.tolist() == [1]


@pytest.mark.parametrize("files, message", [
    (["train.json", "test.json"], "no raw file for the val split"),
    (["train.json", "val.json", "extra.json"], "cannot tell which split extra.json belongs to"),
])
def test_split_by_files_errors_name_the_files(files, message):
    from finetune_pipeline.data.split import split_by_files

    with pytest.raises(PipelineError, match=message):
        split_by_files(files)
