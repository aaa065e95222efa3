"""Input hygiene: strict JSON and forbidden characters."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ioc_shared.contracts.hygiene import HygieneError, find_forbidden, is_clean, loads_strict


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    with pytest.raises(HygieneError) as err:
        loads_strict(b'{"a": 1, "b": {"dataset": "x", "dataset": "y"}}')
    assert err.value.code == "duplicate_key"
    assert err.value.path == "$.dataset"


def test_a_colon_inside_a_value_is_not_a_duplicate() -> None:
    assert loads_strict(b'{"a": "x\\": y", "b": "\\":"}') == {"a": 'x": y', "b": '":'}


def test_white_space_before_the_colon_still_counts() -> None:
    with pytest.raises(HygieneError):
        loads_strict(b'{"a" :1, "a"\n:2}')


@pytest.mark.parametrize("literal", [b"-9223372036854775809", b"18446744073709551616",
                                     b"123456789012345678901234567890"])
def test_integers_beyond_64_bits_are_refused_not_rounded(literal: bytes) -> None:
    with pytest.raises(HygieneError) as err:
        loads_strict(b'{"n": ' + literal + b"}")
    assert err.value.code == "number_out_of_range"


def test_long_digit_runs_in_strings_and_64_bit_integers_pass() -> None:
    assert loads_strict(b'{"id": "12345678901234567890123", "n": -9223372036854775808}') == {
        "id": "12345678901234567890123", "n": -(2**63)}


def test_digit_runs_joined_only_by_white_space_are_not_out_of_range() -> None:
    assert loads_strict(b'[1234567890 ,\n 123456789012, "12345 67890123456789"]') == [
        1234567890, 123456789012, "12345 67890123456789"]


def test_a_leading_bom_is_stripped() -> None:
    assert loads_strict(b"\xef\xbb\xbf{\"a\": 1}") == {"a": 1}


def test_malformed_json_has_its_code() -> None:
    with pytest.raises(HygieneError) as err:
        loads_strict(b"{nope")
    assert err.value.code == "malformed_json"


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\u202e", "\u200b", "\u2066",
                                  "\ufeff", "\ud800", "\udfff"])
def test_forbidden_characters_are_found_with_their_path(char: str) -> None:
    problem = find_forbidden({"payload": {"record": {"title": f"a{char}b"}}})
    assert problem is not None and problem.code == "forbidden_character"
    assert problem.path == "$.payload.record.title"
    assert f"U+{ord(char):04X}" in problem.detail


def test_keys_and_list_items_are_checked() -> None:
    assert find_forbidden({"a\x00": 1}) is not None
    problem = find_forbidden({"tags": ["ok", "b\x00"]})
    assert problem is not None and problem.path == "$.tags[1]"


def test_vietnamese_text_tabs_and_newlines_are_clean() -> None:
    assert find_forbidden({"title": "Đường ĐT.759 sạt lở\tgần cầu\r\nấp 3", "n": 1.5}) is None
    assert is_clean("Phường Lộc Ninh")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=5), children, max_size=4), max_leaves=20))
def test_strict_loading_agrees_with_the_standard_parser(value: object) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        parsed = loads_strict(raw)
    except HygieneError as exc:
        # Only lone surrogates (orjson refuses them) and integers beyond 64 bits may stop
        # a document without duplicate keys.
        assert exc.code in ("malformed_json", "number_out_of_range")
        return
    assert parsed == value


@given(st.dictionaries(st.sampled_from("abc"), st.integers(-(2**63), 2**63 - 1), min_size=1))
def test_any_repeated_key_is_found(value: dict[str, int]) -> None:
    key = next(iter(value))
    body = json.dumps(value)[1:-1]
    raw = ("{" + body + f', "{key}": 0' + "}").encode()
    with pytest.raises(HygieneError) as err:
        loads_strict(raw)
    assert err.value.code == "duplicate_key"


json_trees = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | st.text(alphabet='ab": \\\t\n{}0'),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(alphabet='ab": \\', max_size=3), children, max_size=3),
    max_leaves=12)


def _dumps(value: object, space: str, repeat_in: int, seen: list[int]) -> str:
    """JSON with `space` around every colon and comma; the `repeat_in`-th non-empty object
    (in document order) gets its first key once more."""
    if isinstance(value, dict):
        seen[0] += 1
        index = seen[0]
        items = [f"{json.dumps(k)}{space}:{space}{_dumps(v, space, repeat_in, seen)}"
                 for k, v in value.items()]
        if items and index == repeat_in:
            items.append(f"{json.dumps(next(iter(value)))}{space}:{space}0")
        return "{" + f"{space},{space}".join(items) + "}"
    if isinstance(value, list):
        return "[" + f"{space},{space}".join(_dumps(v, space, repeat_in, seen) for v in value) + "]"
    return json.dumps(value)


@given(json_trees, st.sampled_from(["", " ", "\t", "\n", "\r\n", " \t "]),
       st.integers(1, 6))
def test_a_repeated_key_is_found_whatever_the_white_space_and_strings(
        value: object, space: str, repeat_in: int) -> None:
    raw = _dumps(value, space, repeat_in, [0]).encode()
    if _dumps(value, "", repeat_in, [0]) != _dumps(value, "", 0, [0]):   # a key was repeated
        with pytest.raises(HygieneError) as err:
            loads_strict(raw)
        assert err.value.code == "duplicate_key"
    else:
        assert loads_strict(raw) == value
