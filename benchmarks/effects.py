"""DEFR's two effects on the built-in synthetic benchmark, over seeds: the pair mask, and language init + LSE-Sign.

Per seed s (the data set's seed and the training seed): ``defr synth`` draws a set in ``--setting``
(default ``crowded``) with seed s; tiny-vit is fine-tuned from ``--pretrained`` (default: the packaged
language-aligned ``defr-synth`` weights, as the demo; ``none``: random initialisation) with the demo's
settings (``defr.demo.DemoConfig``) once per (init, loss) row, where init is the classifier's; then

1. **mask effect** (the language + LSE-Sign model): HICO-DET full / rare / non-rare with the hard mask,
   the released additive mask and no mask (every pair scored with its image's logits), on the test
   split and on its images with >= 2 people; same model, same noisy ground-truth boxes
   (``defr.eval.mask_effect``). Headline: hard − none full mAP on the >= 2-people images.
2. **init/loss effect**: classification mAP, rare (classes with < 10 training images) and Few@1/5/10
   for language + LSE-Sign, language + BCE, random + LSE-Sign, random + BCE. Headline: language +
   LSE-Sign − random + BCE on the few-shot classes (Few@10: the classes with <= 10 training images,
   which hold the Few@1 and Few@5 ones), and the same on the combinations held out of pretraining
   (``held_out``: ``defr.data.synth.pretraining.HELD_OUT``).

Every number in mAP points (AP × 100); mean ± population std over the seeds and every per-seed
value. The command, machine and the 1-minute load average at the start and end are recorded.
``--quick``: a tiny run (one seed, 40 images at 64 px, one epoch, rows language+lse-sign and
random+bce unless ``--rows`` says otherwise) for the test suite: it checks the script and the schema,
its numbers mean nothing. ``--extend``: keep the runs already in ``--out`` (same settings and seeds)
and train only the (row, seed) runs it lacks, so the study can be run in parts (the headline rows
first); the earlier parts' commands, seconds and load averages are kept. ``--merge A B C``: summarise
part files run side by side (one seed each, same settings) into ``--out``, keeping each part's record.

    PYTHONPATH=. python benchmarks/effects.py --seeds 0 1 2 --out benchmarks/results/effects.json
    PYTHONPATH=. python benchmarks/effects.py --pretrained none --out benchmarks/results/effects_scratch.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from defr.data import build_dataset, generate_synthetic, hicodet_files
from defr.data.hicodet import load_annotations
from defr.data.synth.pretraining import HELD_OUT_CLASSES
from defr.demo import DemoConfig
from defr.eval.ap import mean_ap
from defr.eval.classification import evaluate_model
from defr.eval.mask_effect import mask_effect
from defr.files import write_json
from defr.jsonio import read_json
from defr.machine import machine_info
from defr.model import load_model
from defr.runtime.whole_image import STUDY_MASK_MODES as MASK_MODES
from defr.train import TrainConfig, train

ROWS = ("language+lse-sign", "language+bce", "random+lse-sign", "random+bce")
CLASSIFICATION_KEYS = ("mAP", "rare", "few@1", "few@5", "few@10", "held_out")
QUICK = {"images": 40, "image_size": 64, "epochs": 1, "seeds": [0], "rows": ["language+lse-sign", "random+bce"]}


def _train(data: Path, row: str, seed: int, images_size: int, epochs: int, out: Path, pretrained: str | None) -> Path:
    init, loss = row.split("+")  # init: the classifier's rows; the backbone is the same in every row
    demo = DemoConfig(pretrained=pretrained)
    cfg = TrainConfig(
        dataset="synth",
        data_root=str(data),
        backbone="tiny-vit",
        pretrained=pretrained,
        init=init,
        text_encoder="minilm",
        loss=loss,
        epochs=epochs,
        batch_size=32,
        image_size=images_size,
        lr=demo.learning_rate,
        logit_scale=demo.logit_scale,
        restart_every=epochs,
        seed=seed,
        output=str(out),
    )
    return train(cfg)


def classification(checkpoint: Path, data: Path) -> dict:
    """mAP, rare and Few@k in points on the test split of ``data``."""
    model = load_model(checkpoint)
    spec = model.cfg.backbone
    test = build_dataset("synth", data, "test", spec.image_size, spec.mean, spec.std)
    metrics = evaluate_model(model, test)
    rare = load_annotations(hicodet_files(data, "test")[0]).rare  # classes with < 10 training instances
    metrics["rare"] = mean_ap(metrics["per_class_ap"], rare)
    metrics["held_out"] = mean_ap(metrics["per_class_ap"], HELD_OUT_CLASSES)  # combinations pretraining never saw
    return {k: _points(metrics[k]) for k in CLASSIFICATION_KEYS}


def _points(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def mean_std(values: list) -> dict:
    """{"mean", "std" (population), "values"} over seeds; mean / std None when no value is defined."""
    defined = [v for v in values if v is not None]
    return {
        "mean": statistics.mean(defined) if defined else None,
        "std": statistics.pstdev(defined) if defined else None,
        "values": values,
    }


def run(args: argparse.Namespace, work: Path, earlier: dict | None = None) -> dict:
    """Train and measure every (row, seed) of ``args`` that ``earlier`` (the runs of an earlier part) lacks."""
    earlier = earlier or {"mask_runs": [], "init_runs": []}
    mask_runs, init_runs = list(earlier["mask_runs"]), list(earlier["init_runs"])
    done = {(r["row"], r["seed"]) for r in init_runs}
    for seed in args.seeds:
        todo = [row for row in args.rows if (row, seed) not in done]
        if not todo:
            continue
        data = generate_synthetic(
            work / f"data{seed}", images=args.images, seed=seed, size=args.image_size, setting=args.setting
        )
        for row in todo:
            started = time.perf_counter()
            pretrained = None if args.pretrained == "none" else args.pretrained
            checkpoint = _train(data, row, seed, args.image_size, args.epochs, work / f"{row}-{seed}", pretrained)
            init_runs.append({"row": row, "seed": seed, **classification(checkpoint, data)})
            if row == "language+lse-sign" and seed not in {r["seed"] for r in mask_runs}:
                effect = mask_effect(checkpoint, data, noise=args.noise, seed=seed)
                mask_runs.append({"seed": seed, **_mask_points(effect)})
            print(f"seed {seed} {row}: {init_runs[-1]} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"mask_runs": sorted(mask_runs, key=lambda r: r["seed"]), "init_runs": init_runs}


def _mask_points(effect: dict) -> dict:
    out = {"images": effect["images"], "images_two_plus_people": effect["images_two_plus_people"]}
    for subset in ("all", "two_plus_people"):
        out[subset] = {m: {k: _points(v) for k, v in effect[subset][m].items()} for m in MASK_MODES}
    return out


def summarise(runs: dict, seeds: list[int], rows: list[str]) -> dict:
    """The per-seed runs → the JSON's "mask" and "init" sections with mean ± std and the headline differences."""
    mask = {"seeds": [r["seed"] for r in runs["mask_runs"]], "runs": runs["mask_runs"]}
    for subset in ("all", "two_plus_people"):
        mask[subset] = {
            m: {k: mean_std([r[subset][m][k] for r in runs["mask_runs"]]) for k in ("full", "rare", "non_rare")}
            for m in MASK_MODES
        }
    mask["hard_minus_none"] = mean_std([_diff(r["two_plus_people"], "hard", "none") for r in runs["mask_runs"]])
    mask["hard_minus_none_all_images"] = mean_std([_diff(r["all"], "hard", "none") for r in runs["mask_runs"]])
    init = {"seeds": seeds, "runs": runs["init_runs"], "rows": {}}
    for row in rows:
        done = [r for r in runs["init_runs"] if r["row"] == row]
        init["rows"][row] = {k: mean_std([r[k] for r in done]) for k in CLASSIFICATION_KEYS}
    if {"language+lse-sign", "random+bce"} <= set(rows):
        by = {(r["row"], r["seed"]): r for r in runs["init_runs"]}
        diffs = [
            None
            if by[("language+lse-sign", s)]["few@10"] is None or by[("random+bce", s)]["few@10"] is None
            else by[("language+lse-sign", s)]["few@10"] - by[("random+bce", s)]["few@10"]
            for s in seeds
        ]
        init["language_lse_minus_random_bce_fewshot"] = mean_std(diffs)
        init["language_lse_minus_random_bce_held_out"] = mean_std([_row_diff(by, s, "held_out") for s in seeds])
    return {"mask": mask, "init": init}


def _row_diff(by: dict, seed: int, key: str) -> float | None:
    a, b = by[("language+lse-sign", seed)].get(key), by[("random+bce", seed)].get(key)
    return None if a is None or b is None else a - b


def _earlier(path: Path, settings: dict, seeds: list[int], parser: argparse.ArgumentParser) -> dict:
    """The runs and records of an earlier part in ``path``, which must have ``settings`` and ``seeds``."""
    if not path.is_file():
        parser.error(f"--extend: {path} does not exist")
    old = read_json(path)
    kept = {k: v for k, v in old["settings"].items() if k != "rows"}
    if kept != settings or old["init"]["seeds"] != seeds:
        was = f"{kept}, seeds {old['init']['seeds']}"
        parser.error(f"--extend: {path} was run with {was}; this run has {settings}, seeds {seeds}")
    return {
        "runs": {"mask_runs": old["mask"]["runs"], "init_runs": old["init"]["runs"]},
        "settings": old["settings"],
        "part": {k: old[k] for k in ("command", "load_average_1min", "seconds")},
        "earlier_parts": old.get("earlier_parts", []),
    }


def merge_parts(paths: list[Path], parser: argparse.ArgumentParser) -> tuple[dict, dict, list[int], list[str], list]:
    """The runs of part files run side by side (one seed each, same settings) → (runs, settings, seeds,
    rows, parts): each part's command, seconds and load average are kept."""
    parts = [read_json(p) for p in paths]
    settings = parts[0]["settings"]
    for path, part in zip(paths, parts, strict=True):
        if part["settings"] != settings or part["quick"] != parts[0]["quick"]:
            parser.error(f"--merge: {path} was run with {part['settings']}, not {settings}")
    seeds = [s for part in parts for s in part["init"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        parser.error(f"--merge: the parts repeat seeds {seeds}")
    runs = {
        "mask_runs": [r for part in parts for r in part["mask"]["runs"]],
        "init_runs": [r for part in parts for r in part["init"]["runs"]],
    }
    history = [
        e
        for part in parts
        for e in [*part.get("earlier_parts", []), {k: part[k] for k in ("command", "seconds", "load_average_1min")}]
    ]
    return runs, settings, sorted(seeds), settings["rows"], history


def _diff(subset: dict, a: str, b: str) -> float | None:
    x, y = subset[a]["full"], subset[b]["full"]
    return None if x is None or y is None else x - y


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=ROWS, help="default: all four (--quick: two)")
    parser.add_argument("--images", type=int, default=DemoConfig.images)
    parser.add_argument("--image-size", type=int, default=DemoConfig.image_size)
    parser.add_argument("--epochs", type=int, help="default: the demo's (8 fine-tuning, 18 from scratch)")
    parser.add_argument("--setting", default="crowded")
    parser.add_argument(
        "--pretrained", default=DemoConfig.pretrained, help="packaged tiny-vit weights (default, as the demo) or none"
    )
    parser.add_argument("--noise", type=float, default=0.05, help="box noise ratio of the oracle detector")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed: checks the script, not DEFR")
    parser.add_argument("--extend", action="store_true", help="add the runs --out lacks to the runs it holds")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="summarise part files run side by side (one seed each) into --out"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/effects.json"))
    args = parser.parse_args(argv)
    if args.merge:
        return _write_merged(args, argv, parser)
    if args.quick:
        args.images, args.image_size, args.epochs = QUICK["images"], QUICK["image_size"], QUICK["epochs"]
        args.seeds, args.rows = QUICK["seeds"], args.rows or QUICK["rows"]
    args.rows = args.rows or list(ROWS)
    if args.epochs is None:
        args.epochs = DemoConfig(pretrained=None if args.pretrained == "none" else args.pretrained).training_epochs
    if "language+lse-sign" not in args.rows:
        parser.error("the mask study uses the language+lse-sign model: keep that row")
    settings = {
        "setting": args.setting,
        "images": args.images,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "noise": args.noise,
        "pretrained": args.pretrained,
    }
    earlier = _earlier(args.out, settings, args.seeds, parser) if args.extend else None
    load_start, started = os.getloadavg()[0], time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        runs = run(args, Path(work), earlier and earlier["runs"])
    rows = [r for r in ROWS if r in args.rows or (earlier and r in earlier["settings"]["rows"])]
    part = {
        "command": " ".join(["python", *sys.argv])
        if argv is None
        else " ".join(["python", "benchmarks/effects.py", *argv]),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = {
        **part,
        "earlier_parts": (earlier["earlier_parts"] + [earlier["part"]]) if earlier else [],
        "machine": machine_info(),
        "quick": args.quick,
        "settings": {**settings, "rows": rows},
        **summarise(runs, args.seeds, rows),
    }
    write_json(result, args.out, indent=2)
    m, i = result["mask"]["hard_minus_none"], result["init"].get("language_lse_minus_random_bce_fewshot")
    print(f"hard - none (>= 2 people): {m}\nlanguage+LSE - random+BCE (few@10): {i}\nwrote {args.out}")
    return result


def _write_merged(args: argparse.Namespace, argv: list[str] | None, parser: argparse.ArgumentParser) -> dict:
    runs, settings, seeds, rows, parts = merge_parts(args.merge, parser)
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python", "benchmarks/effects.py", *argv])
    load = os.getloadavg()[0]
    result = {
        "command": command,
        "load_average_1min": {"start": load, "end": load},
        "seconds": 0.0,
        "earlier_parts": parts,
        "machine": read_json(args.merge[0])["machine"],
        "quick": read_json(args.merge[0])["quick"],
        "settings": settings,
        **summarise(runs, seeds, rows),
    }
    write_json(result, args.out, indent=2)
    print(f"merged {len(args.merge)} parts (seeds {seeds}) into {args.out}")
    return result


if __name__ == "__main__":
    main()
