"""What the pair mask does: HICO-DET mAP with the hard mask (the paper), the released code's
additive mask, and no mask at all, on ``defr demo``'s model and synthetic test split, with noisy
ground-truth boxes as the detector (``defr box-noise``'s noise: N(0, r·W), N(0, r·H) per coordinate).

"No mask" scores every pair with its image's unmasked whole-image logits (the CLS token of the
plain forward), i.e. what detection would be without DEFR's masking.

Also measured: how far the released code's detection preprocessing (normalise, then a bilinear
resize without antialiasing, ``hoi_detection/transforms.py``) and its classification
preprocessing (torchvision ``Resize`` bicubic on the PIL image, then normalise) are from ours
(antialiased bicubic resize, then normalise: ``defr.images``), as max |Δ logit| of the same model on
a real photograph (matplotlib's sample ``grace_hopper.jpg``).

    .venv/bin/python benchmarks/mask_modes.py --demo demo-output --out benchmarks/results/mask_modes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from defr.data import hicodet_files
from defr.eval.box_noise import box_noise_study
from defr.files import write_json
from defr.images import resize_normalise, rgb_tensor, to_rgb
from defr.machine import machine_info
from defr.model import load_model
from defr.runtime import HOIDetector, ModelOptions
from defr.runtime.registry import torch_backend
from defr.runtime.whole_image import STUDY_MASK_MODES as MODES
from defr.runtime.whole_image import WholeImageBackend

RATIOS = (0.0, 0.05, 0.1)


def mask_study(checkpoint: Path, synth_root: Path, ratios, seed: int) -> list[dict]:
    annotations, images = hicodet_files(synth_root, "test")
    model = load_model(checkpoint)
    rows = []
    for mode in MODES:
        backend = torch_backend(model, ModelOptions(mask_mode=None if mode == "none" else mode))  # none: any mode
        detector = HOIDetector(WholeImageBackend(backend) if mode == "none" else backend)
        started = time.perf_counter()
        for row in box_noise_study(detector, annotations, images, ratios, seed=seed):
            row.pop("metrics")
            rows.append({"mask": mode, **row})
        print(f"{mode}: {[(r['ratio'], round(r['full'], 4)) for r in rows[-len(ratios):]]} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    return rows


def preprocessing_study(checkpoint: Path) -> dict:
    """max |Δ logit| between ours and the released code's two preprocessings on a real photograph."""
    import matplotlib.cbook
    from PIL import Image
    from torchvision import transforms as T

    model = load_model(checkpoint)
    spec = model.cfg.backbone
    s, mean, std = spec.image_size, spec.mean, spec.std
    path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with Image.open(path) as im:
        photo = to_rgb(im)
    ours = resize_normalise([rgb_tensor(photo)], s, mean, std)
    x = rgb_tensor(photo).float()[None] / 255
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    released_detection = F.interpolate(normalised, size=(s, s), mode="bilinear", align_corners=False)
    classification = T.Compose(
        [T.Resize((s, s), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize(mean, std)]
    )
    released_classification = classification(photo)[None]
    with torch.no_grad():
        logits = {name: model(x) for name, x in [("ours", ours), ("released_detection", released_detection),
                                                  ("released_classification", released_classification)]}  # fmt: skip
    ref = logits["ours"]
    return {
        "photo": path.name,
        "size": list(photo.size),
        "image_size": s,
        "logit_range": [float(ref.min()), float(ref.max())],
        "max_abs_diff": {k: float((v - ref).abs().max()) for k, v in logits.items() if k != "ours"},
        "max_abs_diff_input": {
            "released_detection": float((released_detection - ours).abs().max()),
            "released_classification": float((released_classification - ours).abs().max()),
        },
        "same_top1": {k: bool(v.argmax() == ref.argmax()) for k, v in logits.items() if k != "ours"},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo-output"), help="a `defr demo` output folder")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mask_modes.json"))
    args = parser.parse_args(argv)
    checkpoint, synth_root = args.demo / "run" / "model.safetensors", args.demo / "data"
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "checkpoint": str(checkpoint),
        "rows": mask_study(checkpoint, synth_root, args.ratios, args.seed),
        "preprocessing": preprocessing_study(checkpoint),
    }
    write_json(result, args.out, indent=2)
    print(json.dumps(result["preprocessing"], indent=2))
    return result


if __name__ == "__main__":
    main()
