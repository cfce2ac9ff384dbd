"""``benchmarks/effects.py --quick``: the effects benchmark runs end to end and writes the documented schema."""

from __future__ import annotations

import json

import pytest
from benchkit import load_benchmark


def test_mean_std_over_seeds_by_hand():
    stats = load_benchmark("effects").mean_std([1.0, 3.0, None])
    assert stats == {"mean": 2.0, "std": 1.0, "values": [1.0, 3.0, None]}


@pytest.mark.slow
def test_quick_run_writes_the_schema(tmp_path):
    out = tmp_path / "effects.json"
    load_benchmark("effects").main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["quick"] and result["settings"]["setting"] == "crowded" and "load_average_1min" in result
    mask, init = result["mask"], result["init"]
    assert mask["seeds"] == [0] and set(mask["hard_minus_none"]) == {"mean", "std", "values"}
    assert len(mask["hard_minus_none"]["values"]) == 1
    run = mask["runs"][0]
    assert set(run["all"]) == {"hard", "released", "none"} and run["images_two_plus_people"] <= run["images"]
    hard, none = run["two_plus_people"]["hard"]["full"], run["two_plus_people"]["none"]["full"]
    if hard is not None and none is not None:
        assert mask["hard_minus_none"]["values"][0] == pytest.approx(hard - none)
    assert init["seeds"] == [0] and set(init["rows"]) == {"language+lse-sign", "random+bce"}
    assert set(init["rows"]["random+bce"]) == {"mAP", "rare", "few@1", "few@5", "few@10", "held_out"}
    # parts run side by side (one seed each) merge into one file with every part's record
    other = json.loads(out.read_text())
    other["init"]["seeds"], other["mask"]["seeds"] = [1], [1]
    for run in other["init"]["runs"] + other["mask"]["runs"]:
        run["seed"] = 1
    (tmp_path / "s1.json").write_text(json.dumps(other))
    merged = load_benchmark("effects").main(
        ["--merge", str(out), str(tmp_path / "s1.json"), "--out", str(tmp_path / "m.json")]
    )
    assert merged["init"]["seeds"] == [0, 1] and len(merged["mask"]["hard_minus_none"]["values"]) == 2
    assert len(merged["earlier_parts"]) == 2
    with pytest.raises(SystemExit):  # the same seed twice
        load_benchmark("effects").main(["--merge", str(out), str(out), "--out", str(tmp_path / "bad.json")])
    assert result["settings"]["pretrained"] == "defr-synth" and "language_lse_minus_random_bce_held_out" in init
    assert set(init["language_lse_minus_random_bce_fewshot"]) == {"mean", "std", "values"}
    text = load_benchmark("tables").table(out)  # the docs' tables are made from the file
    assert "**Mask effect**" in text and "| random + bce |" in text and result["command"] in text


@pytest.mark.slow
def test_extend_adds_only_the_missing_runs(tmp_path):
    """A second part trains only the (row, seed) runs the first lacks and keeps the first's runs and records."""
    effects, out = load_benchmark("effects"), tmp_path / "effects.json"
    first = effects.main(["--quick", "--out", str(out)])
    second = effects.main(["--quick", "--extend", "--rows", "language+lse-sign", "random+lse-sign", "--out", str(out)])
    assert second["settings"]["rows"] == ["language+lse-sign", "random+lse-sign", "random+bce"]
    assert [(r["row"], r["seed"]) for r in second["init"]["runs"]] == [
        ("language+lse-sign", 0),
        ("random+bce", 0),
        ("random+lse-sign", 0),
    ]
    assert second["init"]["runs"][:2] == first["init"]["runs"] and second["mask"]["runs"] == first["mask"]["runs"]
    assert second["earlier_parts"][0]["command"] == first["command"] and "--extend" in second["command"]
    with pytest.raises(SystemExit):  # other settings than the file's
        effects.main(["--quick", "--extend", "--setting", "default", "--out", str(out)])
