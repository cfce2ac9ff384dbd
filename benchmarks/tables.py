"""Markdown tables of the JSON results in benchmarks/results/, for docs/benchmarks.md (numbers are never typed by hand).

.venv/bin/python benchmarks/tables.py benchmarks/results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pairs_table(r: dict) -> str:
    """benchmarks/pairs.py output: backbone only vs our runtime vs the released approach."""
    m = r["machine"]
    head = (
        f"**{r['backbone']} at {r['image_size']} px** ({r['tokens']} tokens), {r['device']}, {r['threads']} threads, "
        f"median of {r['repeats']} — {m.get('cpu')} ({m.get('cores')} cores), torch {r['torch']}\n\n"
        f"Backbone only: {1e3 * r['backbone_only']['median_s']:.1f} ms, "
        f"peak +{r['backbone_only']['peak_mib']:.1f} MiB\n\n"
        "| pairs | ours ms | ours / backbone | ours peak MiB | released ms | released / ours | released peak MiB |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for row in r["rows"]:
        ours, rel = row["runtime"], row["released"]
        star = " (extrapolated)" if rel.get("extrapolated") else ""
        peak = "—" if rel.get("peak_mib") is None else f"{rel['peak_mib']:.1f}"
        rows.append(
            f"| {row['pairs']} | {1e3 * ours['median_s']:.1f} | {row['runtime_over_backbone']:.3f} | "
            f"{ours['peak_mib']:.1f} | {1e3 * rel['median_s']:.0f}{star} | "
            f"{row['released_over_runtime']:.1f} | {peak} |"
        )
    text = head + "\n".join(rows)
    if "hicodet" in r:
        h = r["hicodet"]
        s = h["pairs_per_image"]
        text += (
            f"\n\nReal HICO-DET test pair counts (GT boxes, {s['images']} images): mean {s['mean']:.1f}, "
            f"median {s['median']}, p90 {s['p90']}, p99 {s['p99']}, max {s['max']}.\n\n"
            "| quantile | pairs | ours ms | ours / backbone |\n|---|---:|---:|---:|\n"
        )
        text += "\n".join(
            f"| {q} | {t['pairs']} | {1e3 * t['runtime']['median_s']:.1f} | {t['runtime_over_backbone']:.3f} |"
            for q, t in h["timed"].items()
        )
    return text + f"\n\nCommand: `{r['command']}`"


def bench_table(r: dict) -> str:
    """``defr bench`` output: backends × batch × pairs."""
    c, m = r["config"], r["machine"]
    head = (
        f"**{c['model']} at {c['image_size']} px**, {c['device']}, {m['torch_threads']} thread(s), "
        f"warmup {c['warmup']}, {c['repeats']} repeats — {m['cpu']} ({m['cores']} cores), "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + "\n\n| backend | precision | batch | pairs/image | median ms | p90 ms | images/s |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {x['backend']} | {x['precision']} | {x['batch']} | {x['pairs']} | {x['median_ms']:.1f} | "
        f"{x['p90_ms']:.1f} | {x['images_per_s']:.1f} |"
        for x in r["rows"]
    ]
    return head + "\n".join(rows)


def ablation_table(r: dict) -> str:
    """benchmarks/init_loss_ablation.py output: mean ± std over seeds per (init, loss)."""
    keys = ("mAP", "few@1", "few@5", "few@10")
    head = (
        f"tiny-vit, {r['images']} synthetic images at {r['image_size']} px, {r['epochs']} epochs, "
        f"seeds {r['seeds']} — {r['machine']}\n\n| init + loss | "
        + " | ".join(keys)
        + " |\n|---|"
        + "---:|" * len(keys)
        + "\n"
    )
    rows = []
    for name, stats in r["summary"].items():
        cells = [
            "n/a" if stats[k]["mean"] is None else f"{100 * stats[k]['mean']:.1f} ± {100 * stats[k]['std']:.1f}"
            for k in keys
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n\n(AP in %, synthetic test split.)"


def table(path: Path) -> str:
    r = json.loads(path.read_text())
    if "rows" in r and "backbone_only" in r:
        return pairs_table(r)
    if "config" in r and "rows" in r:
        return bench_table(r)
    if "summary" in r and "runs" in r:
        return ablation_table(r)
    raise SystemExit(f"{path}: not a result of benchmarks/pairs.py, defr bench or benchmarks/init_loss_ablation.py")


def main() -> None:
    for arg in sys.argv[1:]:
        print(f"<!-- {arg} -->\n{table(Path(arg))}\n")


if __name__ == "__main__":
    main()
