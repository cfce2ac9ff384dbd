"""Scene statistics of HICO-DET's test split beside the synthetic set's (default and ``crowded``).

Per image: annotated pairs, distinct people (human boxes), distinct objects; per box: width, height
and area relative to the image; per image with >= 2 people: the gap between neighbouring people
(horizontal centre distance over the image width). Boxes are distinct per image (a person in three
pairs counts once). HICO-DET is read from ``../shared/hicodet/instances_test2015.json`` when present
(never copied into the repository); without it only the synthetic columns are printed.

    PYTHONPATH=. python benchmarks/hicodet_stats.py --images 400 --out benchmarks/results/hicodet_stats.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from defr.data.hicodet import load_annotations
from defr.data.synth.stats import format_stats_table, scene_stats
from defr.files import write_json
from defr.machine import machine_info


def hicodet_path(given: Path | None) -> Path | None:
    """The HICO-DET test annotations: ``given``, else ``../shared/hicodet/`` beside the checkout, else None."""
    if given is not None:
        return given
    path = Path(__file__).resolve().parents[2] / "shared" / "hicodet" / "instances_test2015.json"
    return path if path.is_file() else None


def annotation_stats(annotations) -> dict:
    """``scene_stats`` of a HICO-DET annotation file's images."""
    sizes = [tuple(s) for s in annotations.sizes.tolist()]
    return scene_stats(zip(sizes, annotations.boxes_h, annotations.boxes_o, strict=True))


def synthetic_stats(setting: str, images: int, seed: int, size: int, work: Path) -> dict:
    from defr.data.synth import generate_synthetic

    root = generate_synthetic(work / setting, images=images, seed=seed, size=size, setting=setting)
    return annotation_stats(load_annotations(root / "instances_test2015.json"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, help="HICO-DET instances_test2015.json [../shared/hicodet/...]")
    parser.add_argument("--images", type=int, default=400, help="synthetic images per setting")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    columns = {}
    path = hicodet_path(args.annotations)
    if path is not None:
        columns["HICO-DET test"] = annotation_stats(load_annotations(path))
    else:
        print("HICO-DET annotations not found (../shared/hicodet/instances_test2015.json): synthetic only")
    with tempfile.TemporaryDirectory() as work:
        for setting in ("default", "crowded"):
            columns[f"synth {setting}"] = synthetic_stats(setting, args.images, args.seed, args.size, Path(work))
    print(format_stats_table(columns))
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "synthetic_images": args.images,
        "size": args.size,
        "columns": columns,
    }
    if args.out:
        write_json(result, args.out, indent=2)
    return result


if __name__ == "__main__":
    main()
