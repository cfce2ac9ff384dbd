"""Language init + LSE-Sign vs random init + BCE (and the two mixed rows) on the synthetic set.

Trains tiny-vit once per (init, loss, seed) with the demo's settings (``defr.demo.DemoConfig``) on
one synthetic set and evaluates on its test split. Writes JSON (every run and mean ± std per row)
and a bar chart.

    .venv/bin/python benchmarks/init_loss_ablation.py --seeds 0 1 2 --rows language+lse-sign random+bce \
        --out benchmarks/results/init_loss.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from defr.machine import cpu_name

ROWS = ("random+bce", "random+lse-sign", "language+bce", "language+lse-sign")
KEYS = ("mAP", "few@1", "few@5", "few@10")


def run(rows: list[str], seeds: list[int], images: int, epochs: int, work: Path) -> dict:
    from defr.data import build_dataset, generate_synthetic
    from defr.demo import DemoConfig
    from defr.eval.classification import evaluate_model
    from defr.model import load_checkpoint
    from defr.train import TrainConfig, train

    demo = DemoConfig(pretrained=None)  # the from-scratch ablation it has always been
    data = generate_synthetic(work / "data", images=images, seed=0, size=demo.image_size)
    runs = []
    for row in rows:
        init, loss = row.split("+")
        for seed in seeds:
            cfg = TrainConfig(
                dataset="synth",
                data_root=str(data),
                backbone="tiny-vit",
                init=init,
                text_encoder="minilm",
                loss=loss,
                epochs=epochs,
                batch_size=32,
                image_size=demo.image_size,
                lr=demo.learning_rate,
                logit_scale=demo.logit_scale,
                restart_every=epochs,
                seed=seed,
                output=str(work / f"{init}-{loss}-{seed}"),
            )
            model = load_checkpoint(train(cfg))
            spec = model.cfg.backbone
            test = build_dataset("synth", data, "test", spec.image_size, spec.mean, spec.std)
            metrics = evaluate_model(model, test)
            runs.append({"init": init, "loss": loss, "seed": seed, **{k: metrics[k] for k in KEYS}})
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for row in rows:
        done = [r for r in runs if f"{r['init']}+{r['loss']}" == row]
        summary[row] = {k: _mean_std([r[k] for r in done]) for k in KEYS}
    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "images": images,
        "epochs": epochs,
        "image_size": demo.image_size,
        "lr": demo.learning_rate,
        "logit_scale": demo.logit_scale,
        "seeds": seeds,
        "runs": runs,
        "summary": summary,
    }


def _mean_std(values: list) -> dict:
    """Mean and population std over seeds; None when a metric is undefined (a few-shot list without classes)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, (row, stats) in enumerate(result["summary"].items()):
        xs = [k + (i - (len(result["summary"]) - 1) / 2) * width for k in range(len(KEYS))]
        means = [stats[k]["mean"] or 0.0 for k in KEYS]
        ax.bar(xs, means, width, yerr=[stats[k]["std"] or 0.0 for k in KEYS], label=row)
    ax.set_xticks(range(len(KEYS)), KEYS)
    ax.set_ylabel("AP (synthetic test split)")
    ax.set_title(f"classifier init × loss, tiny-vit, {len(result['seeds'])} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/init_loss.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = run(args.rows, args.seeds, args.images, args.epochs, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
