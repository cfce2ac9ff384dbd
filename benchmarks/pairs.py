"""Latency and peak memory of HOI pair scoring: backbone only vs our mask-1 runtime vs the released approach.

(a) backbone only: ``model(images)``, one image;
(b) our runtime: ``model.forward_pairs(..., with_image_logits=True)``: the backbone once, then the
    last block's CLS row per pair;
(c) the released approach: the whole backbone once per pair (the image repeated P times, all
    blocks, the dense [P, 1, L, L] CLS mask in the last block), in chunks of ``--released-chunk`` pairs.

Each (mode, P) runs in its own subprocess so that peak memory is its own: on CPU the growth of
the resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs) over the
resident size before the measured calls; on CUDA ``torch.cuda.max_memory_allocated`` minus the
memory allocated before. Latency: median over ``--repeats`` runs after one warm-up, under
``torch.no_grad`` with a fixed thread count. Random weights (speed does not depend on them).

The released approach at many pairs takes minutes on a small CPU: with ``--released-max-pairs N``
it is measured only for P <= N and extrapolated linearly (fit over the measured P) above, and those
rows say ``"extrapolated": true``.

    .venv/bin/python benchmarks/pairs.py --backbone tiny-vit --image-size 224 \\
        --annotations ../shared/hicodet/instances_test2015.json \\
        --out benchmarks/results/pairs_tiny-vit_224.json --plot benchmarks/results/pairs_tiny-vit_224.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from defr.files import atomic_path
from defr.machine import machine_info

PAIRS = (1, 16, 64, 225)
MAX_HUMANS = MAX_OBJECTS = 15  # the released pair rules (defr.runtime.pairing.PairConfig)
PERSON = 49


# --- one measurement (runs in a subprocess) -------------------------------------------------------------------


def _build(backbone: str, image_size: int, device: str):
    from defr.model import create_model

    return create_model(backbone, image_size).to(device)


def _inputs(batch: int, pairs: int, image_size: int, device: str):
    """``batch`` frames with ``pairs`` pairs each (valid random boxes), on ``device``."""
    from defr.runtime.contract import example_inputs

    return tuple(t.to(device) for t in example_inputs(image_size, batch, batch * pairs, seed=pairs))


def standard_ops_forward(model, images, boxes_h, boxes_o, pair_index):
    """The pair path of the exported ONNX graphs (``pair_attention_standard_ops``: B·P·L·D einsum)."""
    from defr.export.onnx_export import PairGraph

    return PairGraph(model)(images, boxes_h, boxes_o, pair_index)


def released_forward(model, images, boxes_h, boxes_o, pair_index, chunk: int):
    """The released approach: every pair runs the whole backbone (mask in the last block) → [P, C]."""
    import torch

    from defr.model.pair_attention import pair_masks

    vit = model.vit
    out = []
    for start in range(0, pair_index.shape[0], chunk):
        sl = slice(start, start + chunk)
        tokens = vit.tokens(images[pair_index[sl]], num_blocks=len(vit.blocks) - 1)
        visible = pair_masks(boxes_h[sl], boxes_o[sl], vit.cfg.image_size, vit.cfg.patch_size)
        n = tokens.shape[1]
        mask = tokens.new_zeros(visible.shape[0], 1, n, n)
        mask[:, 0, 0, 1:] = torch.where(visible, 0.0, float("-inf"))
        out.append(model.classify(vit.ln_post(vit.blocks[-1](tokens, attn_mask=mask)[:, 0])))
    return torch.cat(out)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(cfg: dict) -> dict:
    """Median latency (s) and peak memory growth (MiB) of one (mode, pairs) configuration."""
    import torch

    torch.set_num_threads(cfg["threads"])
    device = cfg["device"]
    model = _build(cfg["backbone"], cfg["image_size"], device)
    images, boxes_h, boxes_o, index = _inputs(cfg["batch"], cfg["pairs"], cfg["image_size"], device)
    attention = cfg["attention"]
    calls = {
        "backbone": lambda: model(images),
        "runtime": lambda: model.forward_pairs(
            images, boxes_h, boxes_o, index, with_image_logits=True, attention=attention
        ),
        "standard_ops": lambda: standard_ops_forward(model, images, boxes_h, boxes_o, index),
        "released": lambda: released_forward(model, images, boxes_h, boxes_o, index, cfg["chunk"]),
    }
    fn = calls[cfg["mode"]]
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            before = _rss_kib("VmRSS") * 1024
        fn()  # warm-up, and the peak-memory run
        sync()
        peak = (torch.cuda.max_memory_allocated() if cuda else _rss_kib("VmHWM") * 1024) - before
        times = []
        for _ in range(cfg["repeats"]):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "peak_mib": max(peak, 0) / 2**20}


def run_isolated(cfg: dict) -> dict:
    """``measure(cfg)`` in a fresh interpreter (its own memory high-water mark)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"benchmark worker failed for {cfg}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- pairs per image on HICO-DET test --------------------------------------------------------------------------


def hicodet_pair_counts(path: Path) -> list[int]:
    """Pairs per test image the released pipeline would form from perfect detections.

    Detections = the distinct GT boxes (humans: every ``boxes_h`` and every person object);
    at most 15 humans and 15 other boxes; each human pairs with every other box: n_h · (n − 1).
    """
    data = json.loads(Path(path).read_text())
    counts = []
    for ann in data["annotation"]:
        humans = {tuple(b) for b in ann["boxes_h"]}
        humans |= {tuple(b) for b, o in zip(ann["boxes_o"], ann["object"], strict=True) if o == PERSON}
        others = {tuple(b) for b in ann["boxes_o"]} - humans
        n_h, n_o = min(len(humans), MAX_HUMANS), min(len(others), MAX_OBJECTS)
        counts.append(n_h * max(n_h + n_o - 1, 0))
    return counts


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- driver ----------------------------------------------------------------------------------------------------


def _linear_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares t = a + b·P over the measured points."""
    if len(points) == 1:
        p, t = points[0]
        return 0.0, t / p
    mp = statistics.mean(p for p, _ in points)
    mt = statistics.mean(t for _, t in points)
    b = sum((p - mp) * (t - mt) for p, t in points) / sum((p - mp) ** 2 for p, _ in points)
    return mt - b * mp, b


def run(args: argparse.Namespace) -> dict:
    import torch

    from defr.model import backbone_spec

    vit = backbone_spec(args.backbone, args.image_size).vit
    base = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "chunk": args.released_chunk,
        "batch": args.batch,
        "attention": args.attention,
    }

    def bench(mode: str, pairs: int) -> dict:
        result = run_isolated({**base, "mode": mode, "pairs": pairs})
        print(f"{mode:>9} P={pairs:<4} {result['median_s'] * 1e3:10.1f} ms  {result['peak_mib']:8.1f} MiB", flush=True)
        return result

    backbone = bench("backbone", 1)
    rows = [{"pairs": p, "runtime": bench("runtime", p)} for p in args.pairs]
    if args.standard_ops:
        for row in rows:
            row["standard_ops"] = bench("standard_ops", row["pairs"])
            row["standard_ops_over_backbone"] = row["standard_ops"]["median_s"] / backbone["median_s"]
    measured = []
    for row in rows:
        if args.released_max_pairs is None or row["pairs"] <= args.released_max_pairs:
            row["released"] = {**bench("released", row["pairs"]), "extrapolated": False}
            measured.append((row["pairs"], row["released"]["median_s"]))
    a, b = _linear_fit(measured)
    for row in rows:
        if "released" not in row:
            row["released"] = {"median_s": a + b * row["pairs"], "peak_mib": None, "extrapolated": True}
        row["runtime_over_backbone"] = row["runtime"]["median_s"] / backbone["median_s"]
        row["released_over_runtime"] = row["released"]["median_s"] / row["runtime"]["median_s"]

    result = {
        "machine": machine_info(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        **base,
        "tokens": vit.grid_size**2 + 1,
        "backbone_only": backbone,
        "rows": rows,
        "released_fit": {"intercept_s": a, "per_pair_s": b, "measured_pairs": [p for p, _ in measured]},
    }
    if args.annotations is not None:
        result["hicodet"] = hicodet_study(args.annotations, bench, backbone["median_s"], b)
    return result


def hicodet_study(path: Path, bench, backbone_s: float, per_pair_s: float) -> dict:
    counts = hicodet_pair_counts(path)
    stats = {
        "images": len(counts),
        "mean": statistics.mean(counts),
        "median": _quantile(counts, 0.5),
        "p90": _quantile(counts, 0.9),
        "p99": _quantile(counts, 0.99),
        "max": max(counts),
        "zero": sum(c == 0 for c in counts),
    }
    timed = {}
    for q in ("median", "p90", "p99", "max"):
        p = max(stats[q], 1)
        runtime = bench("runtime", p)
        timed[q] = {"pairs": p, "runtime": runtime, "runtime_over_backbone": runtime["median_s"] / backbone_s}
    return {
        "pairs_per_image": stats,
        "timed": timed,
        # The released approach costs one backbone per pair: its mean cost per image, from the fit.
        "released_mean_s_per_image_extrapolated": stats["mean"] * per_pair_s,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    pairs = [r["pairs"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(pairs, [result["backbone_only"]["median_s"]] * len(pairs), "k--", label="backbone only")
    ax.plot(pairs, [r["runtime"]["median_s"] for r in rows], "o-", label="ours (mask-1 pair path)")
    meas = [r for r in rows if not r["released"]["extrapolated"]]
    extra = [r for r in rows if r["released"]["extrapolated"]]
    ax.plot([r["pairs"] for r in meas], [r["released"]["median_s"] for r in meas], "s-", label="released (measured)")
    if extra:
        last = meas[-1:] + extra
        ax.plot(
            [r["pairs"] for r in last], [r["released"]["median_s"] for r in last], "s:", label="released (extrapolated)"
        )
    ax.set(xscale="log", yscale="log", xlabel="pairs per image", ylabel="seconds per image (median)")
    ax.set_title(f"{result['backbone']} @ {result['image_size']} px, {result['device']}, {result['threads']} threads")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tiny-vit", help="tiny-vit or an open_clip ViT name (ViT-B-16)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, nargs="+", default=list(PAIRS), help="pairs per image")
    parser.add_argument("--batch", type=int, default=1, help="frames per call (each with --pairs pairs)")
    parser.add_argument("--attention", default="auto", help="forward_pairs attention: auto, triton, reference")
    parser.add_argument(
        "--standard-ops", action="store_true", help="also time the ONNX graphs' pair path (B·P·L·D einsum)"
    )
    parser.add_argument("--released-max-pairs", type=int, default=None, help="measure (c) only up to this P")
    parser.add_argument("--released-chunk", type=int, default=16, help="pairs per batch in (c)")
    parser.add_argument("--annotations", type=Path, default=None, help="HICO-DET instances_test2015.json")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    if args.annotations is not None and not args.annotations.is_file():
        parser.error(f"--annotations {args.annotations}: no such file")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text + "\n")
    else:
        print(text)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
