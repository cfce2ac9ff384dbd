"""Markdown tables of the JSON results in benchmarks/results/, for docs/benchmarks.md (numbers are never typed by hand).

.venv/bin/python benchmarks/tables.py benchmarks/results/*.json      # print them
.venv/bin/python benchmarks/tables.py --update docs/benchmarks.md    # rewrite every block between
    <!-- benchmarks/results/NAME.json --> and <!-- end --> from its JSON file
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def pairs_table(r: dict) -> str:
    """benchmarks/pairs.py output: backbone only vs our runtime vs the released approach."""
    m = r["machine"]
    head = (
        f"**{r['backbone']} at {r['image_size']} px** ({r['tokens']} tokens), {r.get('batch', 1)} frame(s) per call, "
        f"{r['device']}, {r['threads']} threads, median of {r['repeats']} — {m.get('cpu')} ({m.get('cores')} cores), "
        f"torch {r['torch']}\n\n"
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
    if any("standard_ops" in row for row in r["rows"]):
        text += "\n\nThe standard-op pair path (every pair against every image's values): " + ", ".join(
            f"{row['pairs']} pairs {1e3 * row['standard_ops']['median_s']:.1f} ms "
            f"({row['standard_ops_over_backbone']:.3f}× backbone)"
            for row in r["rows"]
        )
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
        + (
            f"; 1-minute load average {r['loadavg']['before'][0]:.1f} → {r['loadavg']['after'][0]:.1f}"
            if "loadavg" in r
            else ""
        )
        + "\n\n| backend | precision | batch | pairs/image | median ms | p90 ms | images/s |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {x['backend']} | {x['precision']} | {x['batch']} | {x['pairs']} | {x['median_ms']:.1f} | "
        f"{x['p90_ms']:.1f} | {x['images_per_s']:.1f} |"
        for x in r["rows"]
    ]
    return head + "\n".join(rows) + _speedups(r) + _openvino_ratios(r)


def _openvino_ratios(r: dict) -> str:
    """With OpenVINO rows: OpenVINO against ONNX Runtime on the same file (median time ratios, > 1: OpenVINO faster)."""
    medians = {(x["backend"], x["precision"], x["batch"], x["pairs"]): x["median_ms"] for x in r["rows"]}
    if not any(k[0] == "openvino" for k in medians):
        return ""
    pairs = [  # (column, OpenVINO precision, ONNX Runtime precision)
        ("OV fp32 vs ORT fp32", "fp32", "fp32"),
        ("OV int8 vs ORT int8 (target ≥ 1.15×)", "int8", "int8"),
        ("OV int8 vs ORT fp32", "int8", "fp32"),
        ("OV bf16 vs ORT fp32 (target ≥ 2×)", "bf16", "fp32"),
    ]
    cols = [c for c in pairs if any(k[:2] == ("openvino", c[1]) for k in medians)]
    cols = [c for c in cols if any(k[:2] == ("onnxruntime", c[2]) for k in medians)]
    lines = ["\n\n| batch | pairs/image | " + " | ".join(c[0] for c in cols) + " |"]
    lines.append("|---:|---:|" + "---:|" * len(cols))
    for b, p in sorted({(k[2], k[3]) for k in medians}):
        cells = [f"{medians[('onnxruntime', o, b, p)] / medians[('openvino', v, b, p)]:.2f}×" for _, v, o in cols]
        lines.append(f"| {b} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def openvino_load_table(r: dict) -> str:
    """benchmarks/openvino_load.py output: load times of ONNX vs IR vs the verified cache."""
    m = r["machine"]
    text = (
        f"**{r['backbone']} at {r['image_size']} px**, {r['threads']} thread(s), median of {r['repeats']} — "
        f"{m['cpu']} ({m['cores']} cores), openvino {m['versions'].get('openvino')}; load average "
        f"{r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f}\n\n| load | median s |\n|---|---:|\n"
    )
    text += "\n".join(f"| {name} | {t:.3f} |" for name, t in r["median_s"].items())
    return text + "\n\nBytes: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in r["bytes"].items())


def matmul_table(r: dict) -> str:
    """benchmarks/matmul.py output: the GEMM rates, then each bench row against the fp32 floor."""
    m = r["machine"]
    text = (
        f"GEMM rates (`torch.matmul`, best of the repeats) — {m['cpu']} ({m['cores']} cores), bf16 instructions: "
        f"{'yes' if r['cpu_has_bf16'] else 'no'}; load average {r['loadavg_before'][0]:.1f} → "
        f"{r['loadavg_after'][0]:.1f}\n\n| threads | dtype | shape | GFLOP/s |\n|---:|---|---|---:|\n"
    )
    text += "\n".join(
        f"| {t} | {d} | {shape} | {v:.1f} |"
        for t, by_dtype in r["gflop_per_s"].items()
        for d, by_shape in by_dtype.items()
        for shape, v in by_shape.items()
    )
    if r["rows"]:
        text += (
            "\n\n| model | threads | backend | precision | batch | pairs/image | GFLOP | median ms | fp32 floor ms "
            "| floor / median | bf16 floor ms: floor / median |\n"
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
        )
        text += "\n".join(
            f"| {x['model']} {x['image_size']} | {x['threads']} | {x['backend']} | {x['precision']} | {x['batch']} | "
            f"{x['pairs']} | {x['gflop']:.2f} | {x['median_ms']:.1f} | {x['floor_ms']:.1f} | "
            f"{100 * x['fraction_of_floor']:.0f} % | {_bf16_floor(x)} |"
            for x in r["rows"]
        )
    return text


def _bf16_floor(row: dict) -> str:
    if "bf16_floor_ms" not in row:
        return "—"
    return f"{row['bf16_floor_ms']:.1f}: {100 * row['fraction_of_bf16_floor']:.0f} %"


def _speedups(r: dict) -> str:
    """With PyTorch and ONNX Runtime rows: the speed-ups (median time ratios) per batch and pairs."""
    medians = {(x["backend"], x["precision"], x["batch"], x["pairs"]): x["median_ms"] for x in r["rows"]}
    shapes = sorted({(b, p) for _, _, b, p in medians})
    if not any(k[:2] == ("torch", "fp32") for k in medians) or not any(k[0] == "onnxruntime" for k in medians):
        return ""
    int8 = any(k[:2] == ("onnxruntime", "int8") for k in medians)
    lines = [
        "\n\n| batch | pairs/image | ORT fp32 vs PyTorch | "
        + ("ORT int8 vs ORT fp32 | ORT int8 vs PyTorch |" if int8 else ""),
        "|---:|---:|---:|" + ("---:|---:|" if int8 else ""),
    ]
    for b, p in shapes:
        torch_ms, fp32 = medians[("torch", "fp32", b, p)], medians[("onnxruntime", "fp32", b, p)]
        cells = [f"{torch_ms / fp32:.2f}×"]
        if int8:
            q = medians[("onnxruntime", "int8", b, p)]
            cells += [f"{fp32 / q:.2f}×", f"{torch_ms / q:.2f}×"]
        lines.append(f"| {b} | {p} | " + " | ".join(cells) + " |")
    how = "side by side" if r.get("timing") == "side by side" else "one backend after the other"
    return "\n".join(lines) + f"\n\n(speed-up: the ratio of median times, measured {how}.)"


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


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def int8_accuracy_table(r: dict) -> str:
    """benchmarks/int8_accuracy.py output: fp32 / fp16 / int8 variants on the test split."""
    t, c = r["test"], r["calibration"]
    head = (
        f"{r['backbone']} at {r['image_size']} px (`{Path(r['checkpoint']).name}`), {t['images']} test images, "
        f"detections: GT boxes with noise r = {r['noise']}; int8 calibrated on {c['images']} train images — "
        f"{r['machine']['cpu']}, onnxruntime {r['machine']['versions']['onnxruntime']}\n\n"
        "| file | HICO mAP | HICO-DET full | rare | non-rare | Δ HICO / Δ full (points) | "
        "max \\|Δ\\| pair logit | mean \\|Δ\\| pair logit | top-1 agreement |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    runs = [(name, m, r["logits"].get(name), r["drop"].get(name, {})) for name, m in r["metrics"].items()]
    runs += [(f"OpenVINO {p}", ov["metrics"], ov["logits"], ov["drop"]) for p, ov in r.get("openvino", {}).items()]
    for name, m, lg, d in runs:
        drop = "—" if name == "fp32" else f"{-d.get('hico_mAP', 0):+.2f} / {-d.get('hicodet_full', 0):+.2f}"
        cells = [
            _pct(m.get("hico_mAP")),
            _pct(m.get("hicodet_full")),
            _pct(m.get("hicodet_rare")),
            _pct(m.get("hicodet_non_rare")),
            drop,
            "—" if lg is None else f"{lg['max_abs_pair']:.3f}",
            "—" if lg is None else f"{lg['mean_abs_pair']:.4f}",
            "—" if lg is None else f"{100 * lg['top1_agreement']:.1f} %",
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    note = f"\n\nNote: {r['note']}" if r.get("note") else ""
    return head + "\n".join(rows) + note + f"\n\nCommand: `{r['command']}`"


def op_profile_table(r: dict) -> str:
    """benchmarks/op_profile.py output: per op group, ms / % of the call / GFLOP/s in each runtime and file."""
    m = r["machine"]
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, batch {r['batch']}, {r['pairs']} pairs / image, "
        f"{r['threads']} thread(s), {r['runs']} run(s) — {m['cpu']}, {r['cpu_isa']}; load average "
        f"{r['loadavg']['before'][0]:.1f} → {r['loadavg']['after'][0]:.1f}\n\n"
        "| runtime | file | op group | ms | % of call | GFLOP/s | % of fp32 floor | OpenVINO kernels (ms) |\n"
        "|---|---|---|---:|---:|---:|---:|---|\n"
    )
    floor = r.get("fp32_floor")  # older files have none
    rows = []
    for runtime in ("onnxruntime", "openvino"):
        for precision, p in r[runtime].items():
            rows.append(f"| {runtime} | {precision} | **all** | **{p['kernel_ms']:.2f}** | 100 | | | |")
            for k, v in p["by_kind"].items():
                rate = f"{v['gflop_per_s']:.1f}" if v["gflop_per_s"] else "—"
                of_floor = f"{100 * v['gflop_per_s'] / floor['gflop_per_s']:.0f}" if floor and v["gflop_per_s"] else "—"
                execs = ", ".join(f"{e} {t:.1f}" for e, t in list(v.get("exec_ms", {}).items())[:3]) or "—"
                share = f"{100 * v['share']:.1f}"
                rows.append(
                    f"| {runtime} | {precision} | {k} | {v['ms']:.2f} | {share} | {rate} | {of_floor} | {execs} |"
                )
    note = f"\n\nfp32 GEMM floor: {floor['gflop_per_s']:.1f} GFLOP/s, {floor['source']}" if floor else ""
    return head + "\n".join(rows) + note + f"\n\nCommand: `{r['command']}`"


def throughput_table(r: dict) -> str:
    """benchmarks/throughput.py output: images/s per layout (ONNX Runtime sessions / runs, OpenVINO hints and
    streams), per core and against the fp32 GEMM floor; then the best layout per (cores, batch, file, runtime)."""
    m = r["machine"]
    floor = r["fp32_floor"]
    floors = "; ".join(f"{c} core(s) {f['gflop_per_s']:.0f} GFLOP/s, {f['source']}" for c, f in floor.items())
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, {r['pairs']} pairs / image, {r['seconds']:g} s per row — "
        f"{m['cpu']} ({m['cores']} cores; this process on {r['affinity']}), {r['cpu_isa']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v and k in ("onnxruntime", "openvino"))
        + f"; fp32 GEMM floor: {floors}; load average {r['loadavg']['before'][0]:.1f} → "
        f"{r['loadavg']['after'][0]:.1f}\n\n"
        "| cores | batch | file | runtime | layout | streams / requests | images/s | per core | median ms | p90 ms "
        "| GFLOP/s per core | % of fp32 floor |\n|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for x in r["rows"]:
        ov = f"{x['streams']} / {x['nireq']}" if "streams" in x else "—"
        rows.append(
            f"| {x['cores']} | {x['batch']} | {x['file']} | {x['runtime']} | {x['mode']} | {ov} | "
            f"{x['images_per_s']:.2f} | {x['images_per_s_per_core']:.2f} | {x['median_ms']:.1f} | {x['p90_ms']:.1f} | "
            f"{x['gflop_per_s_per_core']:.1f} | {100 * x['fraction_of_fp32_floor']:.0f} |"
        )
    return head + "\n".join(rows) + _throughput_best(r) + f"\n\nCommand: `{r['command']}`"


def _throughput_best(r: dict) -> str:
    """Per (cores, batch): each file and runtime's best layout, against ONNX Runtime fp32's one-caller row."""
    best: dict = {}
    for x in r["rows"]:
        key = (x["cores"], x["batch"], x["file"], x["runtime"])
        if key not in best or x["images_per_s"] > best[key]["images_per_s"]:
            best[key] = x
    lines = [
        "\n\n| cores | batch | file | runtime | best layout | images/s | vs its latency layout "
        "| vs ORT fp32, one caller |",
        "|---:|---:|---|---|---|---:|---:|---:|",
    ]
    first = {}  # each group's first row: its one-caller (latency) layout
    for x in r["rows"]:
        first.setdefault((x["cores"], x["batch"], x["file"], x["runtime"]), x)
    for (cores, batch, file, runtime), x in best.items():
        own, base = first[(cores, batch, file, runtime)], first.get((cores, batch, "fp32", "onnxruntime"))
        vs_base = f"{x['images_per_s'] / base['images_per_s']:.2f}×" if base else "—"
        lines.append(
            f"| {cores} | {batch} | {file} | {runtime} | {x['mode']} | {x['images_per_s']:.2f} | "
            f"{x['images_per_s'] / own['images_per_s']:.2f}× | {vs_base} |"
        )
    return "\n".join(lines)


def int8_speed_table(r: dict) -> str:
    """benchmarks/int8_speed.py output: median ms per backend / int8 variant, side by side."""
    m = r["machine"]
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, batch {r['batch']}, {r['pairs']} pairs per image, "
        f"{r['threads']} thread(s), median of {r['repeats']} (side by side) — {m['cpu']} ({m['cores']} cores)\n\n"
        "| backend | median ms | speed-up over ORT fp32 |\n|---|---:|---:|\n"
    )
    rows = [f"| {k} | {v:.1f} | {r['speedup_over_ort_fp32'][k]:.2f}× |" for k, v in r["median_ms"].items()]
    return head + "\n".join(rows) + f"\n\nCommand: `{r['command']}`"


def ort_session_table(r: dict) -> str:
    """benchmarks/ort_session.py output: latency per session variant, session creation with / without cache."""
    m = r["machine"]
    variants = list(r["median_ms"]["fp32"])
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, batch {r['batch']}, {r['pairs']} pairs per image, "
        f"median of {r['repeats']} — {m['cpu']} ({m['cores']} cores), onnxruntime {m['versions']['onnxruntime']}\n\n"
        "| session | fp32 ms | int8 ms |\n|---|---:|---:|\n"
    )
    rows = [
        f"| {k} | {r['median_ms']['fp32'][k]:.1f} | "
        + (f"{r['median_ms']['int8'][k]:.1f}" if k in r["median_ms"]["int8"] else "—")
        + " |"
        for k in variants
    ]
    creation = "\n\n| session creation | fp32 s | int8 s |\n|---|---:|---:|\n" + "\n".join(
        f"| {k} | {r['creation_s']['fp32'][k]:.3f} | {r['creation_s']['int8'][k]:.3f} |"
        for k in ("no cache", "writing the cache", "reading the cache")
    )
    sizes = (
        f"\n\nCache files: {r['creation_s']['fp32']['cache_bytes'] / 2**20:.0f} MiB (fp32), "
        f"{r['creation_s']['int8']['cache_bytes'] / 2**20:.0f} MiB (int8). "
        f"Transformer-optimizer fusions found: {r.get('transformer_fusions')}."
    )
    return head + "\n".join(rows) + creation + sizes + f"\n\nCommand: `{r['command']}`"


def ort_profile_table(r: dict) -> str:
    """benchmarks/ort_profile.py output: ONNX Runtime kernel time by kind of node, fp32 and int8."""
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, batch {r['batch']}, {r['pairs']} pairs per image, one thread "
        f"— ONNX Runtime profiler, kernel time per call\n\n"
        "| kind | fp32 ms | share | GFLOP/s | int8 ms | share | GFLOP/s (equivalent) |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for k, v in r["fp32"]["by_kind"].items():
        q = r["int8"]["by_kind"].get(k, {})
        rate = "" if not v["gflop_per_s"] else f"{v['gflop_per_s']:.0f}"
        # int8 FLOPs are read from the same shapes; for the integer convolution they are not comparable
        qrate = "" if not q.get("gflop_per_s") or k == "conv" else f"{q['gflop_per_s']:.0f}"
        rows.append(
            f"| {k} | {v['ms']:.1f} | {100 * v['share']:.1f} % | {rate} | {q.get('ms', 0):.1f} | "
            f"{100 * q.get('share', 0):.1f} % | {qrate} |"
        )
    tail = (
        f"\n| total | {r['fp32']['kernel_ms']:.1f} | | | {r['int8']['kernel_ms']:.1f} | | |\n\n"
        f"Side by side: PyTorch eager {r['torch_ms']:.1f} ms, ONNX Runtime fp32 {r['onnxruntime_ms']:.1f} ms. "
        f"The fp32 graph is {r['fp32_gflop']:.1f} GFLOP; at the rate of ONNX Runtime's own GEMMs it would take "
        f"{r['fp32_floor_ms']:.0f} ms, i.e. at best {r['best_possible_ratio_over_torch']:.2f}× PyTorch eager."
    )
    return head + "\n".join(rows) + tail + f"\n\nCommand: `{r['command']}`"


def pair_overhead_table(r: dict) -> str:
    """benchmarks/pair_overhead.py output: backbone vs runtime vs the standard-op pair path, interleaved."""
    m = r["machine"]
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, {r['threads']} thread(s), median of {r['repeats']} interleaved "
        f"calls — {m['cpu']} ({m['cores']} cores), torch {m['versions']['torch']}\n\n"
        "| frames | pairs/image | backbone ms | runtime ms | runtime / backbone | standard ops ms | "
        "standard ops / backbone |\n|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for x in r["rows"]:
        ms = x["median_ms"]
        rows.append(
            f"| {x['batch']} | {x['pairs_per_image']} | {ms['backbone']:.1f} | {ms['runtime']:.1f} | "
            f"{x['runtime_over_backbone']:.3f} | {ms['standard_ops']:.1f} | {x['standard_ops_over_backbone']:.3f} |"
        )
    return head + "\n".join(rows) + f"\n\nCommand: `{r['command']}`"


def mask_modes_table(r: dict) -> str:
    """benchmarks/mask_modes.py output: HICO-DET mAP per mask and noise ratio; preprocessing deltas."""
    head = "| mask | box noise r | full mAP % | rare % | non-rare % |\n|---|---:|---:|---:|---:|\n"
    rows = [
        f"| {x['mask']} | {x['ratio']:g} | {100 * x['full']:.2f} | {100 * x['rare']:.2f} | {100 * x['non_rare']:.2f} |"
        for x in r["rows"]
    ]
    pre = r["preprocessing"]
    d, same = pre["max_abs_diff"], pre["same_top1"]
    lo, hi = pre["logit_range"]
    tail = (
        f"\n\nPreprocessing, on `{pre['photo']}` ({pre['size'][0]}×{pre['size'][1]}) at {pre['image_size']} px "
        f"(logits in [{lo:.2f}, {hi:.2f}]): max |Δ logit| vs ours — released detection (normalise, then bilinear "
        f"without antialiasing) {d['released_detection']:.3f} (same top-1: {same['released_detection']}); released "
        f"classification (torchvision Resize bicubic on PIL) {d['released_classification']:.4f} (same top-1: "
        f"{same['released_classification']})."
    )
    return head + "\n".join(rows) + tail + f"\n\nCommand: `{r['command']}` — {r['machine']['cpu']}"


def preprocess_table(r: dict) -> str:
    """benchmarks/preprocess.py output: batched uint8 resize vs per-image PIL resize."""
    head = (
        f"{r['frames']} frames to {r['image_size']}², {r['threads']} thread — {r['machine']['cpu']}\n\n"
        "| frame | batched ms / frame | PIL ms / frame | speed-up | max \\|Δ logit\\| |\n|---|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {x['width']}×{x['height']} | {x['batched_ms_per_frame']:.2f} | {x['pil_ms_per_frame']:.2f} | "
        f"{x['pil_ms_per_frame'] / x['batched_ms_per_frame']:.1f}× | {x['max_abs_logit_diff']:.1e} |"
        for x in r["rows"]
    ]
    return head + "\n".join(rows) + f"\n\nCommand: `{r['command']}`"


def video_table(r: dict) -> str:
    """benchmarks/video.py output: fps and per-stage latency of ``defr video``, HOI stage vs ``detect()``."""
    stages = ("decode", "track", "preprocess", "hoi", "draw", "write")
    head = (
        f"**{r['backbone']} at {r['image_size']} px**, {r['frames']} frames of "
        f"{r['frame_size'][0]}×{r['frame_size'][1]}, "
        f"batch {r['batch']} — {r['machine']['cpu']}, 1-minute load average {r['load_average_1min']['start']:.1f} "
        f"at the start, {r['load_average_1min']['end']:.1f} at the end\n\n"
        "| run | fps | HOI stage ms/frame (mean) | HOI share of wall | HOI stage / `detect()` | "
        "p50 ms/frame: " + " · ".join(stages) + " |\n|---|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for name, key in (("every output", "full"), ("stream only", "stream_only")):
        x = r[key]
        lat = x["latency_ms"]
        p50 = " · ".join(f"{lat[s]['p50_ms']:.1f}" if s in lat else "–" for s in stages)
        rows.append(
            f"| {name} | {x['fps']:.1f} | {x['hoi_stage_ms_per_frame']:.1f} | {x['hoi_share']:.0%} | "
            f"{x['hoi_stage_over_detect']:.2f} | {p50} |"
        )
    passes = r["reference"]["before"]["passes_ms"] + r["reference"]["after"]["passes_ms"]
    tail = (
        f"\n\n`detect()` reference: {r['detect_ms_per_frame']:.1f} ms/frame, median of {len(passes)} passes "
        f"({min(passes):.0f}–{max(passes):.0f} ms)."
    )
    return head + "\n".join(rows) + tail + f"\n\nCommand: `{r['command']}`"


def scene_stats_table(r: dict) -> str:
    from defr.data.synth.stats import format_stats_table

    note = "(statistics of drawn boxes: no timing, so the shared machine does not matter here)."
    return f"{format_stats_table(r['columns'])}\n\nCommand: `PYTHONPATH=. {r['command']}`\n{note}"


def _ms(x: dict, bold: bool = False) -> str:
    """{"mean", "std", "values"} → "m ± s [v1, v2, ...]" (points)."""
    if x["mean"] is None:
        return "n/a"
    values = ", ".join("n/a" if v is None else f"{v:.1f}" for v in x["values"])
    head = f"{x['mean']:.1f} ± {x['std']:.1f}"
    return f"{f'**{head}**' if bold else head} [{values}]"


def _start(settings: dict) -> str:
    """Where the effects runs' tiny-vit started: the packaged pretrained weights or random initialisation."""
    tag = settings.get("pretrained")
    return f"fine-tuned from `--pretrained {tag}`" if tag and tag != "none" else "from random initialisation"


def effects_table(r: dict) -> str:
    """benchmarks/effects.py output: the mask effect and the init/loss effect, mean ± std over seeds."""
    mask, init, st = r["mask"], r["init"], r["settings"]
    runs = mask["runs"]
    lines = [
        f"**Mask effect** (language + LSE-Sign model, noisy ground-truth boxes r = {st['noise']}): HICO-DET mAP "
        f"points, mean ± population std over seeds {mask['seeds']} [per seed]",
        "",
        "| test images | mAP | hard mask | released mask | no mask | hard − none |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for subset, key, diff in (
        ("two_plus_people", "images_two_plus_people", mask["hard_minus_none"]),
        ("all", "images", mask["hard_minus_none_all_images"]),
    ):
        count = "/".join(str(run[key]) for run in runs)
        name = f"with >= 2 people ({count} per seed)" if subset != "all" else f"all ({count} per seed)"
        for metric in ("full", "rare", "non_rare"):
            cells = " | ".join(_ms(mask[subset][m][metric]) for m in ("hard", "released", "none"))
            last = _ms(diff, bold=subset != "all") if metric == "full" else ""
            lines.append(f"| {name if metric == 'full' else ''} | {metric.replace('_', '-')} | {cells} | {last} |")
    lines += [
        "",
        f"**Init / loss effect**: classification mAP points on the test split, seeds {init['seeds']}; rare: classes "
        "with < 10 training images; Few@k: classes with <= k",
        "",
    ]
    first = next(iter(init["rows"].values()))
    keys = [k for k in ("mAP", "rare", "few@1", "few@5", "few@10", "held_out") if k in first]
    names = {"few@1": "Few@1", "few@5": "Few@5", "few@10": "Few@10", "held_out": "held-out combinations"}
    lines += [
        "| init + loss | " + " | ".join(names.get(k, k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for row, stats in init["rows"].items():
        cells = " | ".join(_ms(stats[k]) for k in keys)
        lines.append(f"| {row.replace('+', ' + ')} | {cells} |")
    for key, label in (("fewshot", "Few@10"), ("held_out", "held-out")):
        diff = init.get(f"language_lse_minus_random_bce_{key}")
        if diff is not None:
            cells = ["" for _ in keys]
            cells[keys.index("few@10" if key == "fewshot" else "held_out")] = _ms(diff, bold=True)
            lines.append(f"| language + lse-sign − random + bce, {label} | " + " | ".join(cells) + " |")
    parts = [*r.get("earlier_parts", []), {k: r[k] for k in ("command", "seconds", "load_average_1min")}]
    lines += [
        "",
        f"Settings: `{st['setting']}`, {st['images']} images at {st['image_size']} px, {st['epochs']} epochs, "
        f"tiny-vit {_start(st)} with the demo's settings — {r['machine'].get('cpu')} ({r['machine'].get('cores')} "
        "cores). Commands:",
        "",
    ]
    for part in parts:
        load = part["load_average_1min"]
        lines.append(
            f"- `PYTHONPATH=. {part['command']}` ({part['seconds'] / 60:.0f} min, 1-minute load average "
            f"{load['start']:.1f} at the start, {load['end']:.1f} at the end)"
        )
    return "\n".join(lines)


def demo_video_table(r: dict) -> str:
    """defr demo's demo.json: the video stage over its seeds, and the video's scale beside the training images'."""
    lines = [
        "| video seed | true events | predicted | matched with identity | precision | recall | any track: P / R "
        "| frame-level HICO-DET mAP | false events: other pair · other class · off in time · no track "
        "| grid's best on this clip: F1 (P / R) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for row in r["video_seeds"]:
        e, a, f = row["events"], row["events_any_track"], row["false_events"]
        best = row["thresholds_chosen_on_this_clip"]
        lines.append(
            f"| {row['seed']} | {e['truth']} | {e['predicted']} | {e['matched']} | {e['precision']:.2f} | "
            f"{e['recall']:.2f} | {a['precision']:.2f} / {a['recall']:.2f} | {100 * row['frame_hicodet_full']:.1f} | "
            f"{f['other_pair']} · {f['other_class']} · {f['off_in_time']} · {f['no_track']} | "
            f"{best['f1']:.2f} ({best['precision']:.2f} / {best['recall']:.2f}) |"
        )
    t, chosen = r["video_thresholds"], r["video_thresholds"]["validation"]
    lines += [
        "",
        f"Event thresholds, chosen once for the model by F1 with identity on {len(t['validation_seeds'])} "
        f"validation clips (seeds {', '.join(map(str, t['validation_seeds']))}; their events pooled): on "
        f"{t['on']:g}, off {t['off']:g}, min frames {t['min_frames']}; on those clips F1 {chosen['f1']:.2f} "
        f"(precision {chosen['precision']:.2f}, recall {chosen['recall']:.2f}; {chosen['matched']} of "
        f"{chosen['truth']} true events, {chosen['predicted']} predicted).",
    ]
    v = r["video"]
    from defr.data.synth.stats import format_stats_table

    scale = format_stats_table({"training images": v["training_scale"], f"video seed {v['seed']}": v["scale"]})
    seconds = ", ".join(f"{k.removesuffix('_seconds')} {r[k]:.0f} s" for k in r if k.endswith("_seconds"))
    return (
        "\n".join(lines)
        + f"\n\nScale (median [p10, p90]; video: its frames with a true event):\n\n{scale}"
        + (
            f"\n\nCommand: `defr demo` (its defaults; {v['frames']} frames of {v['size'][0]}×{v['size'][1]} per clip); "
            f"time per stage, cumulative: {seconds}."
        )
    )


def serve_table(r: dict) -> str:
    """benchmarks/serve.py output: N camera streams against ``defr serve``, batched vs max-batch 1, vs local."""
    m, load, settings = r["machine"], r["load_1min"], r["settings"]
    machine = f"{m['cpu']} ({m['cores']} cores); 1-minute load average {load['start']:.1f} → {load['end']:.1f}"
    size = f"**{r['backbone']} at {r['image_size']} px**, frames {r['video']['width']}×{r['video']['height']}"
    cpus = f"one model replica: {settings['replica_cpus']} CPU(s), as many torch threads"
    if settings.get("floor_only"):
        header = f"{size}, {cpus}, the floor only (`--floor-only`) — {machine}"
        return "\n".join([header, "", serve_floor_table(r["floor"])])
    per_stream, rounds = settings["per_stream"], settings["rounds"]
    lines = [
        f"{size}, {cpus}, {per_stream} requests per stream, best of {rounds} rounds — {machine}",
        "",
        "| streams | batched fps | `--max-batch 1` fps | batching gain | local HOI stage fps | served / local "
        "| p50 / p99 ms (batched) | p50 / p99 ms (max-batch 1) | mean batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in r["summary"]:
        lines.append(
            f"| {s['streams']} | {s['batched_fps']} | {s['single_fps']} | {s['batching_gain']}× | {s['local_fps']} "
            f"| {s['served_over_local']}× | {s['batched_p50_ms']} / {s['batched_p99_ms']} "
            f"| {s['single_p50_ms']} / {s['single_p99_ms']} | {s['mean_batch']} |"
        )
    if "floor" in r:
        lines += ["", serve_floor_table(r["floor"])]
    return "\n".join(lines)


def serve_floor_table(f: dict) -> str:
    """benchmarks/serve.py's floor: Ray Serve's own cost per request beside ``defr serve`` at one stream."""
    parts, stages = f["parts_ms"], f["defr"].get("stages_ms", {})

    def p50_p90(kind: str) -> str:
        return f"{f[kind]['p50_ms']} / {f[kind]['p90_ms']}"

    rows = [
        ("Ray Serve echo (proxy → replica; 1 hop)", p50_p90("echo")),
        ("Ray Serve ingress → model answering at once (2 hops)", p50_p90("two_hop")),
        ("`defr serve`, one stream", p50_p90("defr")),
        (
            f"our parts (its stages): parse {parts['parse']} + model {parts['model']} + answer {parts['answer']}",
            f"{parts['sum']}",
        ),
        ("target: two-hop p50 + our parts + 3 ms", f"{f['target_p50_ms']} ({'met' if f['target_met'] else 'not met'})"),
    ]
    if "path_over_two_hop_by_round_ms" in f:
        over = f["path_over_two_hop_by_round_ms"]
        rows.append(
            (
                "round by round: median of (a request − its own parts) − that round's two-hop p50 (target ≤ 3)",
                f"{' / '.join(str(x) for x in over)} (met in {f['target_met_rounds']} of {len(over)})",
            )
        )
    if busy := f.get("two_hop_busy"):
        over = f["path_over_two_hop_busy_by_round_ms"]
        rows += [
            (
                f"Ray Serve ingress → model computing {busy['stages_ms']['model']} ms in a thread first (2 hops): "
                f"p50; the path around its model (median over requests)",
                f"{busy['p50_ms']}; {busy['path_p50_ms']}",
            ),
            (
                "`defr serve`'s path around its own parts (median over requests) − that of the computing floor, "
                "round by round",
                " / ".join(str(x) for x in over),
            ),
        ]
    order = "interleaved request by request" if f.get("interleaved") else "interleaved"
    lines = [
        f"One stream, {f['requests']} sequential requests of {f['body_bytes'] / 1000:.0f} KB each per measurement, "
        f"best p50 of {f['rounds']} rounds, {order}:",
        "",
        "| request | p50 / p90 ms |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    if stages:
        lines += [
            "",
            "`defr serve`'s stages (`Server-Timing`, median ms of the best round): "
            + ", ".join(f"{k} {v}" for k, v in stages.items())
            + f"; p50 minus their sum (HTTP and Serve's proxy, roughly): "
            f"{f['defr']['p50_ms'] - sum(stages.values()):.1f}",
        ]
    if floor_stages := f["two_hop"].get("stages_ms"):
        lines += [
            "",
            "The two-hop floor's own stages (same names, median ms of its best round): "
            + ", ".join(f"{k} {v}" for k, v in floor_stages.items())
            + f"; p50 minus their sum: {f['two_hop']['p50_ms'] - sum(floor_stages.values()):.1f}",
        ]
    return "\n".join(lines)


def serve_parts_table(r: dict) -> str:
    """benchmarks/serve_parts.py output: the parts of one served request that run outside Ray."""
    m, parts = r["machine"], r["median_ms"]
    rows = "\n".join(f"| `{name}` | {ms:.2f} |" for name, ms in parts.items())
    return (
        f"**{r['backbone']} at {r['image_size']} px**, one 256-px frame per request "
        f"({r['request_bytes'] / 1024:.0f} KiB), {r['threads']} torch threads, median of {r['frames']} — "
        f"{m['cpu']} ({m['cores']} cores)\n\n"
        f"| part | median ms |\n|---|---:|\n{rows}\n| sum | {r['total_ms']:.2f} |"
    )


def pretrain_log_table(r: dict) -> str:
    """``defr pretrain``'s log (benchmarks/results/pretrain_log.json): losses and zero-shot scores per logged step."""
    m, cfg = r["machine"], r["config"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}"

    lines = [
        f"`{r['command']}` (commit {r['commit'][:7]}): batch {cfg['batch_size']} at {cfg['image_size']} px, lr "
        f"{cfg['lr']}, {cfg['steps']} steps — {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch thread)",
        "",
        "| step | images seen | wall s | loss image ↔ caption | loss pair ↔ clause | zero-shot mAP, seen | "
        "held-out | pair top-1, seen | held-out |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in r["log"]:
        losses = " | ".join(f"{e[k]:.3f}" if k in e else "" for k in ("loss_image", "loss_pair"))
        scores = " | ".join(
            pct(e.get(k))
            for k in ("zero_shot_mAP_seen", "zero_shot_mAP_held_out", "pair_top1_seen", "pair_top1_held_out")
        )
        lines.append(f"| {e['step']} | {e['images_seen']:,} | {e['seconds']:.0f} | {losses} | {scores} |")
    return "\n".join(lines)


def table(path: Path) -> str:
    r = json.loads(path.read_text())
    if "log" in r and "config" in r and "commit" in r:
        return pretrain_log_table(r)
    if r.get("benchmark") == "serve":
        return serve_table(r)
    if r.get("benchmark") == "op_profile":
        return op_profile_table(r)
    if r.get("benchmark") == "throughput":
        return throughput_table(r)
    if r.get("benchmark") == "serve_parts":
        return serve_parts_table(r)
    if "mask" in r and "init" in r:
        return effects_table(r)
    if "video_seeds" in r and "classification" in r:
        return demo_video_table(r)
    if "columns" in r and "synthetic_images" in r:
        return scene_stats_table(r)
    if "stream_only" in r:
        return video_table(r)
    if "rows" in r and r["rows"] and "runtime_over_backbone" in r["rows"][0] and "median_ms" in r["rows"][0]:
        return pair_overhead_table(r)
    if "preprocessing" in r and "rows" in r:
        return mask_modes_table(r)
    if "rows" in r and r["rows"] and "pil_ms_per_frame" in r["rows"][0]:
        return preprocess_table(r)
    if "variants" in r and "metrics" in r:
        return int8_accuracy_table(r)
    if "speedup_over_ort_fp32" in r:
        return int8_speed_table(r)
    if "creation_s" in r:
        return ort_session_table(r)
    if "fp32_floor_ms" in r:
        return ort_profile_table(r)
    if "rows" in r and "backbone_only" in r:
        return pairs_table(r)
    if "median_s" in r and "bytes" in r:
        return openvino_load_table(r)
    if "gflop_per_s" in r:
        return matmul_table(r)
    if "config" in r and "rows" in r:
        return bench_table(r)
    if "summary" in r and "runs" in r:
        return ablation_table(r)
    raise SystemExit(f"{path}: not a result of defr bench or a script in benchmarks/")


BLOCK = re.compile(r"<!-- (benchmarks/results/[^ ]+\.json) -->\n(.*?)<!-- end -->", re.S)


def update(doc: Path) -> None:
    """Rewrite every ``<!-- benchmarks/results/NAME.json -->`` … ``<!-- end -->`` block of ``doc`` in place."""
    text = doc.read_text()
    starts = len(re.findall(r"<!-- benchmarks/results/[^ ]+\.json -->", text))
    blocks = BLOCK.findall(text)
    if any("<!-- benchmarks/results/" in body for _, body in blocks) or len(blocks) != starts:
        raise SystemExit(f"{doc}: every <!-- benchmarks/results/NAME.json --> needs its own <!-- end -->")
    new = BLOCK.sub(lambda m: f"<!-- {m.group(1)} -->\n{table(Path(m.group(1)))}\n<!-- end -->", text)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(doc)


def main() -> None:
    if sys.argv[1:2] == ["--update"]:
        update(Path(sys.argv[2]))
        return
    for arg in sys.argv[1:]:
        print(f"<!-- {arg} -->\n{table(Path(arg))}\n<!-- end -->\n")


if __name__ == "__main__":
    main()
