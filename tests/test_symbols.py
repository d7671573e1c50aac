import pytest
from hypothesis import given
from hypothesis import strategies as st

from finetune_pipeline.data.symbols import extend_mapping, index_to_symbol, symbol_order, symbol_to_index


def test_first_symbols_follow_the_alphabet_then_two_letters():
    assert [index_to_symbol(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "a",
        "b",
        "z",
        "aa",
        "ab",
        "az",
        "ba",
        "zz",
        "aaa",
    ]


@given(st.integers(min_value=0, max_value=10**6))
def test_symbol_round_trips(i):
    assert symbol_to_index(index_to_symbol(i)) == i


def test_symbols_are_unique_for_thousands_of_classes():
    symbols = [index_to_symbol(i) for i in range(5000)]
    assert len(set(symbols)) == 5000
    assert symbol_order(reversed(symbols)) == symbols


@pytest.mark.parametrize("bad", ["", "A", "a1", "é"])
def test_non_symbols_are_rejected(bad):
    with pytest.raises(ValueError):
        symbol_to_index(bad)


def test_extend_mapping_keeps_old_symbols_and_appends_new_labels():
    old = {"Sport": "a", "Politics": "b"}
    new = extend_mapping(old, ["Culture", "Sport", "Economy", "Politics"])
    assert new["Sport"] == "a" and new["Politics"] == "b"
    assert {new["Culture"], new["Economy"]} == {"c", "d"}  # appended, in sorted label order
    assert new["Culture"] == "c"


def test_extend_mapping_first_time_is_sorted_by_label():
    assert extend_mapping({}, ["b-label", "a-label", "b-label"]) == {"a-label": "a", "b-label": "b"}
