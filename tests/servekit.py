"""Shared builders of the serve tests: random frames with detections, image folders, result comparisons."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
from PIL import Image

TOL = 1e-5


def scene(seed: int, n: int = 3) -> tuple[list[np.ndarray], list[dict]]:
    """``n`` random frames of different sizes with a person (HICO 49) and two objects each."""
    rng = np.random.default_rng(seed)
    images, dets = [], []
    for _ in range(n):
        h, w = (int(x) for x in rng.integers(40, 90, 2))
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        x1, y1 = rng.uniform(0, w / 3, 3), rng.uniform(0, h / 3, 3)
        boxes = np.stack([x1, y1, x1 + rng.uniform(5, w / 2, 3), y1 + rng.uniform(5, h / 2, 3)], 1)
        dets.append({"boxes": boxes.round(2).tolist(), "labels": [49, 3, 41], "scores": [0.9, 0.8, 0.7]})
    return images, dets


def as_arrays(d: dict) -> dict:
    return {"boxes": np.asarray(d["boxes"], np.float32), "labels": np.asarray(d["labels"]), "scores": d["scores"]}


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["hoi"] == w["hoi"] and len(g["hoi"]) > 0
        for key in ("boxes_h", "boxes_o", "scores"):
            np.testing.assert_allclose(np.asarray(g[key]), np.asarray(w[key]), atol=TOL, rtol=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint(path) -> str:
    from defr.model import create_model, save_checkpoint

    save_checkpoint(create_model("tiny-vit", 64), path)
    return str(path)


def image_set(folder: Path, n: int, size: int = 80, seed: int = 0) -> tuple[Path, Path]:
    """``n`` PNG images and a detections JSONL (a person and two objects each) in ``folder``."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True)
    lines = []
    for i in range(n):
        name = f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)).save(images / name)
        x1, y1 = rng.uniform(0, size / 3, 3), rng.uniform(0, size / 3, 3)
        boxes = np.stack([x1, y1, x1 + rng.uniform(8, size / 2, 3), y1 + rng.uniform(8, size / 2, 3)], 1)
        entry = {"filename": name, "boxes": boxes.tolist(), "labels": [49, 3, 41], "scores": [0.9, 0.8, 0.7]}
        lines.append(json.dumps(entry))
    (folder / "detections.jsonl").write_text("\n".join(lines) + "\n")
    return images, folder / "detections.jsonl"


def assert_results_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name in want:
        g, w = got[name], want[name]
        assert g["hoi"] == w["hoi"], name
        for key in ("boxes_h", "boxes_o", "scores"):
            np.testing.assert_allclose(np.asarray(g[key]), np.asarray(w[key]), atol=TOL, rtol=0, err_msg=name)
