"""A body that does not decode is answered in edge-run's own words, whichever msgspec is installed."""

from __future__ import annotations

import msgspec
import pytest

from edge_run.api.http.errors import undecodable

NOT_JSON = "The request body is not valid JSON"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model": "\xff\xfe"}', f"{NOT_JSON}: it is not UTF-8."),
        (b'{"model": "x"', f"{NOT_JSON}: it ends before the JSON does."),
        (b'{"model": "x",}', f"{NOT_JSON} (at byte 14)."),
        (b'{"model": x}', f"{NOT_JSON} (at byte 10)."),
        (b'{"model": "x"} trailing', f"{NOT_JSON} (at byte 16)."),
    ],
)
def test_the_installed_msgspec_s_decode_errors_get_edge_run_s_words(raw: bytes, expected: str) -> None:
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        assert undecodable(str(exc)) == expected
    except UnicodeDecodeError:  # older msgspec: the app's own handler for it says the same
        assert expected.endswith("not UTF-8.")
    else:
        pytest.fail("msgspec decoded a broken body")


@pytest.mark.parametrize(
    "message",
    [
        "Invalid UTF-8 encoded string",  # msgspec 0.23
        "'utf-8' codec can't decode byte 0xff in position 12: invalid start byte",
    ],
)
def test_every_known_wording_of_a_utf8_failure_maps_to_one_message(message: str) -> None:
    assert undecodable(message) == f"{NOT_JSON}: it is not UTF-8."


@pytest.mark.parametrize("message", ["Expected `object`, got `array`", "Object missing required field `model`"])
def test_a_schema_violation_is_not_mistaken_for_broken_json(message: str) -> None:
    assert undecodable(message) is None
