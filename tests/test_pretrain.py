"""``defr pretrain`` and the packaged ``defr-synth`` weights: seed and held-out rules, loading, zero-shot."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from defr.cli import main
from defr.data import generate_synthetic
from defr.data.synth import CLASSES, class_counts
from defr.data.synth.pretraining import (
    HELD_OUT,
    HELD_OUT_CLASSES,
    PRETRAIN_CLASSES,
    PRETRAIN_SEED_START,
    ZERO_SHOT_SEED_START,
    caption,
    draw_pretraining_batch,
    hard_negative,
)
from defr.demo import DemoConfig
from defr.errors import ConfigError
from defr.model import build_model
from defr.model import pretrained as pretrained_module
from defr.model.factory import zero_shot_model
from defr.pretrain import PretrainConfig, pretrain
from defr.vocab import hoi_phrase

ROOT = Path(__file__).parents[1]


# --- the seed rule --------------------------------------------------------------------------------------------


def test_evaluation_data_never_uses_a_pretraining_seed():
    """The demo, its video and validation clips, the effects benchmark and every seed written in the tests
    lie below the pretraining range; the generators refuse a seed inside it."""
    demo = DemoConfig()
    used = {demo.seed, *(demo.seed + k for k in range(demo.video_seeds))}
    used |= {demo.seed + 1000 + k for k in range(demo.video_seeds)}  # defr.demo's validation clips
    used |= {0, 1, 2}  # benchmarks/effects.py's default seeds
    for path in [*ROOT.joinpath("tests").glob("*.py"), *ROOT.joinpath("benchmarks").glob("*.py")]:
        used |= {int(v) for v in re.findall(r"seed[s]?\s*[=:]\s*\[?(\d+)", path.read_text())}
    assert used and max(used) < PRETRAIN_SEED_START
    assert PRETRAIN_SEED_START + PretrainConfig().steps < ZERO_SHOT_SEED_START


def test_generators_refuse_a_pretraining_seed(tmp_path):
    with pytest.raises(ConfigError, match="reserved for pretraining"):
        generate_synthetic(tmp_path / "d", images=8, seed=PRETRAIN_SEED_START, size=64)
    assert not (tmp_path / "d").exists()
    from defr.data.synth import generate_synthetic_video

    with pytest.raises(ConfigError, match="reserved for pretraining"):
        generate_synthetic_video(tmp_path / "v.mp4", frames=10, seed=ZERO_SHOT_SEED_START, width=64)
    with pytest.raises(ConfigError, match="pretraining seeds are in"):
        draw_pretraining_batch(5, 4, 64)


# --- the held-out rule -----------------------------------------------------------------------------------------


def test_held_out_combinations_are_half_the_demos_few_shot_classes():
    """At least half of the demo's few-shot classes (<= 10 training images) are held out of pretraining,
    and each held-out combination's verb and object appear in other, seen, combinations."""
    demo = DemoConfig()
    rng = np.random.default_rng(0)
    slots = int((rng.choice(4, size=demo.images, p=(0.25, 0.30, 0.25, 0.20)) + 1).sum() * 0.75)
    few = [c for c, n in enumerate(class_counts(slots, demo.images, "train")) if n <= 10]
    assert len(set(HELD_OUT_CLASSES) & set(few)) * 2 >= len(few)
    seen = [CLASSES[c] for c in PRETRAIN_CLASSES]
    for verb, obj in HELD_OUT:
        assert any(v == verb for v, _ in seen) and any(o == obj for _, o in seen)


def test_no_pretraining_image_or_caption_holds_a_held_out_combination():
    phrases = [hoi_phrase(*c) for c in HELD_OUT]
    for seed in range(PRETRAIN_SEED_START, PRETRAIN_SEED_START + 6):
        batch = draw_pretraining_batch(seed, 16, 64)
        for item in batch:
            assert not set(item.annotation.classes) & set(HELD_OUT_CLASSES)
            assert item.caption == caption(item.annotation.classes)
            assert not any(p in item.caption.split("; ") for p in phrases)
            assert len(item.annotation.boxes_h) == len(item.annotation.classes)


def test_each_anchor_has_a_hard_negative_sibling():
    """The second half of a batch is the first half with one class swapped for one of the same object
    (another verb) or the same verb (another object)."""
    batch = draw_pretraining_batch(PRETRAIN_SEED_START + 7, 12, 64)
    for anchor, sibling in zip(batch[:6], batch[6:], strict=True):
        a, b = anchor.annotation.classes, sibling.annotation.classes
        changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        assert len(changed) <= 1
        for x, y in changed:
            assert CLASSES[x][0] == CLASSES[y][0] or CLASSES[x][1] == CLASSES[y][1]
    rng = np.random.default_rng(0)
    assert all(hard_negative(rng, c, []) not in HELD_OUT_CLASSES for c in PRETRAIN_CLASSES for _ in range(5))


# --- the packaged weights --------------------------------------------------------------------------------------


@pytest.fixture
def packaged_copy(tmp_path, monkeypatch):
    """The packaged weights and sidecar copied to a folder the loader reads instead (to tamper with)."""
    real = pretrained_module._asset("tiny-vit-defr-synth.safetensors")
    for suffix in (".safetensors", ".json"):
        shutil.copy(real.with_suffix(suffix), tmp_path / real.with_suffix(suffix).name)
    monkeypatch.setattr(pretrained_module, "_asset", lambda name: tmp_path / name)
    return tmp_path / real.name


def test_packaged_weights_match_their_sidecar():
    meta = pretrained_module.builtin_sidecar("tiny-vit", "defr-synth")
    path = pretrained_module.builtin_weights("tiny-vit", "defr-synth")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
    assert path.stat().st_size <= 20 * 2**20
    assert {"command", "commit", "seeds", "held_out", "text_encoder", "config"} <= set(meta)
    assert meta["seeds"]["batches"][0] >= PRETRAIN_SEED_START
    assert sorted(map(tuple, meta["held_out"])) == sorted(HELD_OUT)


def test_a_changed_or_truncated_weights_file_is_refused(packaged_copy):
    data = bytearray(packaged_copy.read_bytes())
    data[-100] ^= 0xFF
    packaged_copy.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="were changed") as e:
        build_model("tiny-vit", ["ride bicycle"], 128, pretrained="defr-synth", init="random")
    assert "\n" not in str(e.value)
    packaged_copy.write_bytes(bytes(data[:-100]))
    with pytest.raises(ConfigError, match="changed or truncated"):
        build_model("tiny-vit", ["ride bicycle"], 128, pretrained="defr-synth", init="random")


def test_an_unknown_packaged_tag_is_refused():
    with pytest.raises(ConfigError, match="no packaged weights 'defr-real'"):
        build_model("tiny-vit", ["ride bicycle"], 128, pretrained="defr-real", init="random")


@pytest.mark.slow
def test_language_init_on_aligned_weights_is_t_times_p_transposed():
    """``--init language`` with the text encoder the weights were aligned to: W = T·Pᵀ (rows compared
    after normalising: the head is a cosine head)."""
    from defr.model.text import class_embeddings, class_prompts, load_text_encoder

    names = ["ride bicycle", "hold cup", "hold kite"]
    model = build_model("tiny-vit", names, 128, pretrained="defr-synth", init="language", text_encoder="minilm")
    assert model.cfg.init["head_rule"].startswith("aligned")
    proj = load_file(str(pretrained_module.builtin_weights("tiny-vit", "defr-synth")))["proj"].float()
    text = class_embeddings(load_text_encoder("minilm"), class_prompts(names, ("{}",)))
    expected = torch.nn.functional.normalize(text @ proj.t(), dim=-1)
    got = torch.nn.functional.normalize(model.classifier.detach(), dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    vit_keys = set(load_file(str(pretrained_module.builtin_weights("tiny-vit", "defr-synth")))) - {"proj"}
    assert vit_keys == set(model.backbone.state_dict())


# --- zero-shot evaluation ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_zero_shot_evaluate_writes_the_evaluate_keys(tmp_path):
    data = generate_synthetic(tmp_path / "d", images=24, seed=4, size=64)
    out = tmp_path / "zs.json"
    args = ["evaluate", "--zero-shot", "--backbone", "tiny-vit", "--pretrained", "defr-synth"]
    args += ["--text-encoder", "minilm", "--dataset", "synth", "--data-root", str(data), "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert {"mAP", "ko_mAP", "few@1", "few@5", "few@10", "per_class_ap"} <= set(metrics)
    assert metrics["zero_shot"] == {"backbone": "tiny-vit", "pretrained": "defr-synth", "text_encoder": "minilm"}
    refused = CliRunner().invoke(main, [*args[:2], "--dataset", "synth", "--data-root", str(data)])
    assert refused.exit_code != 0 and "--backbone and --pretrained" in refused.output


def test_zero_shot_refuses_weights_not_aligned_to_the_encoder(tmp_path):
    from safetensors.torch import save_file

    state = build_model("tiny-vit", ["ride bicycle"], 128, init="random").backbone.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(Exception, match="not aligned with text encoder 'minilm'"):
        zero_shot_model("tiny-vit", str(tmp_path / "plain.safetensors"), "minilm", ["ride bicycle"], 128)


# --- pretraining itself ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_pretraining_run_writes_loadable_weights_and_resumes_only_unchanged(tmp_path):
    cfg = PretrainConfig(
        output=str(tmp_path / "run"), steps=2, batch_size=4, log_every=1, eval_images=6, workers=0, warmup_steps=1
    )
    weights = pretrain(cfg, command="test")
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and meta["command"] == "test"
    log = [json.loads(line) for line in (tmp_path / "run" / "pretrain_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2] and all("zero_shot_mAP" in e for e in log)
    model = build_model("tiny-vit", ["ride bicycle"], 64, pretrained=str(weights), init="random")
    assert model.backbone.cfg.image_size == 64  # positional embedding resized from 128
    with pytest.raises(ConfigError, match="pass --resume"):
        pretrain(cfg)
    changed = PretrainConfig(**{**cfg.__dict__, "lr": 1e-2})
    with pytest.raises(ConfigError, match="changed: {'lr'"):
        pretrain(changed, resume=True)
