from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # -n 2 on 2 cores: one thread a worker (and its children), not two each
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real HICO-DET metadata); tests skip when it is absent."""
    if not (SHARED / "hicodet" / "instances_test2015.json").is_file():
        pytest.skip("../shared/hicodet/instances_test2015.json not present")
    return SHARED


@pytest.fixture
def tiny_model():
    """A random tiny-vit DEFR model at 64 px (4×4 patch grid), 600 HICO classes, eval mode."""
    from defr.model import create_model

    return create_model("tiny-vit", 64)


@pytest.fixture
def clip_layout_model():
    """``tiny_model`` with CLIP's patch projection instead of tiny-vit's conv stem and a CLS token that reads
    every block: the layout of the released DEFR checkpoint, for tests that write one."""
    return clip_layout_tiny(64)


@pytest.fixture(scope="module")
def detect_inputs(tmp_path_factory) -> Path:
    """A folder with ``images/`` (two 50×40 PNGs) and ``dets.jsonl`` (their detections) for ``defr detect``."""
    import json

    import numpy as np
    from PIL import Image

    from defr import vocab

    root = tmp_path_factory.mktemp("images")
    (root / "images").mkdir()
    lines = []
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(root / "images" / f"{i}.png")
        dets = {"boxes": [[0, 0, 20, 30], [10, 5, 45, 38]], "labels": [vocab.PERSON, 2], "scores": [0.9, 0.8]}
        lines.append(json.dumps({"filename": f"{i}.png", **dets}))
    (root / "dets.jsonl").write_text("\n".join(lines))
    return root


def clip_layout_tiny(image_size: int, seed: int = 0):
    from defr.model import create_model

    return create_model("tiny-vit", image_size, seed=seed, stem="patch", cls_reads="every_block")


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA; ``heavy`` tests (ViT-B at 672 px and such) run only with DEFR_HEAVY=1.
    The groups are meant for pytest-xdist (``-n 2``, ``--dist loadgroup`` in pyproject.toml): a test file's
    tests on one worker (module-scoped exports and servers built once), all Ray tests on one. With pytest 9.2
    and pytest-xdist 3.8 (what CI installs) they are NOT applied: xdist marks a group by renaming
    ``item._nodeid``, which pytest 9 no longer reads (it keeps ``item._id``), so tests are dealt out one by one,
    a module's fixtures may be built on both workers and two local Ray clusters may run side by side (found
    2026-12-07 with ``-v``: one file's tests on gw0 and gw1). Kept as is: CI's 14 minutes were measured so."""
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_heavy = pytest.mark.skip(reason="heavy: set DEFR_HEAVY=1 to run")
    for item in items:
        item.add_marker(pytest.mark.xdist_group("ray" if "ray" in item.keywords else item.path.name))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "heavy" in item.keywords and os.environ.get("DEFR_HEAVY") != "1":
            item.add_marker(skip_heavy)
