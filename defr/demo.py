"""``defr demo``: the whole pipeline on a built-in synthetic HOI set, on a CPU, in minutes.

synthesise → train tiny-vit (MiniLM language init, LSE-Sign) → HICO-style evaluation →
HOI detection with noisy GT boxes as the detector + HICO-DET evaluation → ONNX export and an
ONNX Runtime check against PyTorch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from defr.files import write_json
from defr.train import TrainConfig, train


@dataclass
class DemoConfig:
    output: Path = Path("demo-output")
    images: int = 2000
    image_size: int = 128
    epochs: int = 18  # about 800 optimizer steps: what a 2-core CPU does in a few minutes
    lr: float = 3e-4  # a random-init tiny ViT trains faster than at the fine-tuning rates of real backbones
    # γ = 100 (the paper) suits fine-tuning pretrained features; a ViT trained from scratch for a few
    # hundred steps learns much faster with a softer scale (docs/benchmarks.md, "demo settings").
    logit_scale: float = 10.0
    seed: int = 0
    detection: bool = True
    export: bool = True


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns (and writes to ``OUTPUT/demo.json``) the metrics of each."""
    from defr.data import build_dataset, generate_synthetic
    from defr.eval.classification import evaluate_model
    from defr.model import load_checkpoint

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    timer = time.perf_counter()

    data = generate_synthetic(out / "data", images=cfg.images, seed=cfg.seed, size=cfg.image_size)
    report["synth_seconds"] = _lap(timer)

    train_cfg = TrainConfig(
        dataset="synth",
        data_root=str(data),
        backbone="tiny-vit",
        init="language",
        text_encoder="minilm",
        loss="lse-sign",
        epochs=cfg.epochs,
        batch_size=32,
        image_size=cfg.image_size,
        lr=cfg.lr,
        logit_scale=cfg.logit_scale,
        restart_every=cfg.epochs,  # one cosine cycle: a restart this early costs a short run more than it helps
        seed=cfg.seed,
        output=str(out / "run"),
    )
    checkpoint = train(train_cfg)
    report["train_seconds"] = _lap(timer)

    model = load_checkpoint(checkpoint)
    spec = model.cfg.backbone
    test = build_dataset("synth", data, "test", spec.image_size, spec.mean, spec.std)
    metrics = evaluate_model(model, test)
    report["classification"] = {k: metrics[k] for k in ("mAP", "few@1", "few@5", "few@10", "ko_mAP")}
    report["classification"]["chance_mAP"] = _chance_map(test.labels)
    report["eval_seconds"] = _lap(timer)

    if cfg.detection:
        from defr.runtime.box_noise import run_detection_demo

        report["detection"] = run_detection_demo(checkpoint, data, out / "detection", seed=cfg.seed)
        report["detection_seconds"] = _lap(timer)
    if cfg.export:
        from defr.export import export_and_check

        report["export"] = export_and_check(checkpoint, out / "export", synth_root=data)
        report["export_seconds"] = _lap(timer)

    write_json(report, out / "demo.json", indent=2)
    return report


def _chance_map(labels) -> float:
    """Expected mAP of random scores: per class, the fraction of positives among evaluated images."""
    import numpy as np

    evaluated = labels != 0  # ambiguous entries are not evaluated; NaN counts as negative
    positives = ((labels == 1) & evaluated).sum(0)
    counted = evaluated.sum(0)
    keep = positives > 0
    return float(np.mean(positives[keep] / counted[keep]))


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 1)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _summary(report: dict) -> str:
    c = report["classification"]
    lines = [
        "",
        "HICO-style classification on the synthetic test split (fractions):",
        "  " + "   ".join(f"{k} {_fmt(c[k])}" for k in ("mAP", "chance_mAP", "few@1", "few@5", "few@10", "ko_mAP")),
    ]
    if "detection" in report:
        d = report["detection"]
        lines.append(
            "HICO-DET-style detection (noisy GT boxes as the detector): "
            + "   ".join(f"{k} {_fmt(d[k])}" for k in ("full", "rare", "non_rare"))
        )
    if "export" in report:
        lines.append(f"export: {_export_line(report['export'])}")
    stages = [k for k in report if k.endswith("_seconds")]
    lines.append("seconds: " + ", ".join(f"{k.removesuffix('_seconds')} {report[k]}" for k in stages))
    return "\n".join(lines)


def _export_line(e: dict) -> str:
    return ", ".join(f"{k} {v:.2e}" for k, v in e.items() if k.startswith("max_") and isinstance(v, float))


@click.command("demo")
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True
)
@click.option("--images", type=int, default=DemoConfig.images, show_default=True, help="Synthetic images.")
@click.option("--image-size", type=int, default=DemoConfig.image_size, show_default=True)
@click.option("--epochs", type=int, default=DemoConfig.epochs, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skip-detection", is_flag=True, help="Stop after classification.")
@click.option("--skip-export", is_flag=True, help="Do not export to ONNX.")
def demo_command(
    output: Path, images: int, image_size: int, epochs: int, seed: int, skip_detection: bool, skip_export: bool
) -> None:
    """Synthesise a HOI set, train tiny-vit, evaluate, detect, export (CPU, no downloads)."""
    cfg = DemoConfig(
        output=output,
        images=images,
        image_size=image_size,
        epochs=epochs,
        seed=seed,
        detection=not skip_detection,
        export=not skip_export,
    )
    report = run_demo(cfg)
    click.echo(_summary(report))
    click.echo(f"report: {output / 'demo.json'}")
