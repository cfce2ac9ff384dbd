"""Preprocessing: the one batched tensor path (``defr.images.resize_normalise``) vs the per-image PIL
resize it replaced, on the CPU: time per frame, and how far the model's logits move.

For each frame size, 8 synthetic frames (``defr synth``'s renderer) as uint8 tensors are resized to
S×S and normalised: (a) ``resize_normalise`` on the batch (antialiased bicubic on the uint8
images, torchvision's uint8 path, then normalise); (b) per frame, PIL's bicubic ``Image.resize``,
then to float and normalise (the earlier path of ``HOIDetector`` for PIL and numpy inputs).
Median of repeats, one thread. Then max |Δ logit| of a random tiny-vit between (a) and (b).

    .venv/bin/python benchmarks/preprocess.py --out benchmarks/results/preprocess.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from defr.data.synth import draw_image
from defr.files import write_json
from defr.images import resize_normalise
from defr.machine import machine_info
from defr.model import create_model

SIZES = ((256, 192), (640, 480), (1280, 720))


def pil_path(frames: list[np.ndarray], s: int, mean, std) -> torch.Tensor:
    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    out = []
    for f in frames:
        x = torch.from_numpy(np.asarray(Image.fromarray(f).resize((s, s), Image.BICUBIC))).permute(2, 0, 1)
        out.append((x.float() / 255 - mean_t) / std_t)
    return torch.stack(out)


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = create_model("tiny-vit", args.image_size)
    spec = model.cfg.backbone
    rng = np.random.default_rng(0)
    rows = []
    for w, h in SIZES:
        frames = [np.asarray(draw_image(rng, [i % 28], max(w, h))[0].resize((w, h))) for i in range(args.frames)]
        tensors = [torch.from_numpy(f.copy()).permute(2, 0, 1) for f in frames]
        batched = resize_normalise(tensors, args.image_size, spec.mean, spec.std)
        pil = pil_path(frames, args.image_size, spec.mean, spec.std)
        with torch.no_grad():
            delta = float((model(batched) - model(pil)).abs().max())
        t_batched = median_seconds(
            lambda t=tensors: resize_normalise(t, args.image_size, spec.mean, spec.std), args.repeats
        )
        t_pil = median_seconds(lambda f=frames: pil_path(f, args.image_size, spec.mean, spec.std), args.repeats)
        rows.append(
            {"width": w, "height": h, "batched_ms_per_frame": 1000 * t_batched / args.frames,
             "pil_ms_per_frame": 1000 * t_pil / args.frames, "max_abs_logit_diff": delta}
        )  # fmt: skip
        print(rows[-1], flush=True)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(),
              "image_size": args.image_size, "frames": args.frames, "threads": 1, "rows": rows}  # fmt: skip
    write_json(result, args.out, indent=2)
    return result


if __name__ == "__main__":
    main()
