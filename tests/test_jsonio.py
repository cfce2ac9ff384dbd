"""The one JSON reader: hostile numbers, nesting, constants and encodings refused by name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from defr.errors import ConfigError
from defr.files import write_json
from defr.jsonio import JsonInputError, parse_json, read_json


def test_plain_json_round_trips(tmp_path):
    obj = {"boxes": [[0, 1.5, 2, 3]], "labels": [1], "name": "é", "ok": True, "none": None, "big": 2**63 - 1}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(obj), encoding="utf-8")
    assert read_json(path) == obj


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" + "1" * 400 + "]", "64 bits"),
        ("[" + "9" * 5000 + "]", "64 bits"),
        ("[-" + "9" * 30 + "]", "64 bits"),
        (str(2**63), "64 bits"),
        ('{"frame": 1e400}', "out of range"),
        ("[-1e400]", "out of range"),
        ("[NaN]", "NaN"),
        ('{"x": Infinity}', "Infinity"),
        ("[-Infinity]", "Infinity"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": [1, 2}', "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_hostile_json_is_refused_by_name(text, words):
    with pytest.raises(JsonInputError, match=words) as info:
        parse_json(text, "dets.json")
    assert str(info.value).startswith("dets.json: ")
    assert isinstance(info.value, ConfigError)


def test_non_utf8_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(JsonInputError, match=r"latin\.json: not UTF-8"):
        read_json(path)


def test_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 100 + "0]")
    with pytest.raises(JsonInputError, match="more than the 64 allowed"):
        read_json(path, max_bytes=64)
    assert len(read_json(path, max_bytes=10_000)) == 101


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        read_json(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "obj, key",
    [
        ({"results": [{"scores": [0.5, float("nan")]}]}, "['results'][0]['scores'][1] is nan"),
        ({"ap": float("inf")}, "['ap'] is inf"),
        ([1, {"x": np.float32("-inf")}], "[1]['x'] is -inf"),
        (float("nan"), "the value is nan"),
    ],
)
def test_write_json_refuses_non_finite_numbers_by_key_path(tmp_path, obj, key):
    """``json.dump`` wrote ``NaN`` / ``Infinity``: a file no JSON reader (ours included) accepts."""
    path = tmp_path / "out.json"
    with pytest.raises(ConfigError, match=re.escape(key)) as info:
        write_json(obj, path)
    assert str(info.value).startswith(f"cannot write {path}: ") and "\n" not in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_write_json_writes_numpy_scalars_as_numbers(tmp_path):
    path = write_json({"a": np.float32(0.5), "b": [np.int64(3)]}, tmp_path / "out.json", indent=2)
    assert read_json(path) == {"a": 0.5, "b": [3.0]}


@pytest.mark.parametrize("bad", ['{"x": NaN}', "[1, 2]", '{"a": 1, "a": 2}', "\xff"])
def test_every_jsonl_reader_names_file_and_line_the_same_way(tmp_path, bad):
    """Detections (runtime), events (video) and a dataset's records (data) are read by ``read_jsonl``: the same
    bad line gives the same one-line message, ``<path>, line <n>: ...``, whichever reader meets it."""
    from defr.data.jsonl import read_jsonl as read_dataset_lines
    from defr.runtime.io import load_frame_detections
    from defr.video.event_files import read_events

    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n" + bad.encode("latin-1") + b"\n")
    readers = [
        lambda: load_frame_detections(path),
        lambda: read_events(path, predicted=True),
        lambda: read_dataset_lines(path, tmp_path, 3),
    ]
    messages = set()
    for read in readers:
        with pytest.raises(ValueError) as info:
            read()
        messages.add(str(info.value))
    assert len(messages) == 1 and messages.pop().startswith(f"{path}, line 2: ")
