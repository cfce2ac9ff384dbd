"""INT8 accuracy on the demo's synthetic test split: fp32 / fp16 / int8, and what quantizing each node group costs.

Exports the checkpoint (fp32, fp16), quantizes it once per variant (node groups, calibration method,
per-channel or per-tensor weights, dynamic), calibrating on ``--calibration-images`` images of the
*train* split (frames and GT-box pairs), then evaluates every file on the whole *test* split with the
same detections for all: the GT boxes with the demo's box noise (r = 0.05, seed 0, drawn in the
annotation file's order as the demo draws them, so the fp32 row is the demo's detection result).

Per file: max / mean |Δ| of pair and image logits against fp32, top-1 agreement of pair classes,
HICO mAP (image logits, the HICO protocol), HICO-DET mAP full / rare / non-rare (official protocol).
The same for OpenVINO (the gate's OpenVINO rows, ``defr.export.accuracy``): every int8 file run by
OpenVINO, and ``model.onnx`` with OpenVINO's bf16 hint (only on a CPU with bf16 instructions; the
report's ``note`` says when it was not run). ``int8 nncf`` is ``defr-export --int8 --quantizer nncf``'s
file (NNCF, ``defr.export.nncf_int8``), with accuracy control by the gate on the train images that
calibration did not use (as the export does with its held-out images), so both runtimes run it beside
ONNX Runtime's quantization. The table printed last: fp32 / each file in ONNX Runtime / in OpenVINO.

    .venv/bin/defr demo                                   # trains the demo model (demo-output/)
    .venv/bin/python benchmarks/int8_accuracy.py --checkpoint demo-output/run/model.safetensors \\
        --data demo-output/data --out benchmarks/results/int8_accuracy.json
    .venv/bin/python benchmarks/int8_accuracy.py ... --variants int8 "int8 nncf"   # ORT's and NNCF's quantizer
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from defr.data import hicodet_files
from defr.data.hicodet import load_annotations
from defr.eval.gt_detections import noisy_gt_detections
from defr.export import ExportConfig, export_model
from defr.export.accuracy import accuracy_gate, nncf_accuracy_control
from defr.export.calibration import GraphFeeds, load_calibration_set
from defr.export.int8 import Int8Config, quantize
from defr.export.nncf_int8 import NncfConfig, quantize_nncf
from defr.export.sidecar import file_entry, write_sidecar
from defr.files import write_json
from defr.machine import machine_info
from defr.model import load_model
from defr.runtime.contract import RuntimeMeta
from defr.runtime.sidecar import read_sidecar

VARIANTS = {
    "int8": Int8Config(),  # the default: conv + linear, min/max, per-channel weights
    "int8 linear only": Int8Config(groups=("linear",)),
    "int8 + head": Int8Config(groups=("conv", "linear", "head")),
    "int8 + attention": Int8Config(groups=("conv", "linear", "attention")),
    "int8 + norm": Int8Config(groups=("conv", "linear", "norm")),
    "int8 all groups": Int8Config(groups=("conv", "linear", "attention", "head", "norm")),
    "int8 percentile": Int8Config(calibration_method="percentile"),
    "int8 per-tensor weights": Int8Config(per_channel=False),
    "int8 dynamic": Int8Config(method="dynamic", groups=("linear",)),
    "int8 nncf": NncfConfig(),  # defr-export --int8 --quantizer nncf
}
MAX_DROP = 1.0  # mAP points: NNCF's accuracy control, as defr-export's default gate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="a defr synth folder (the demo's: demo-output/data)")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.05, help="box noise ratio of the detections (the demo's)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_accuracy.json"))
    args = parser.parse_args(argv)

    model = load_model(args.checkpoint)
    meta = RuntimeMeta.from_model(model)
    report: dict = {
        "command": "python " + " ".join(sys.argv),
        "checkpoint": str(args.checkpoint),
        "backbone": model.cfg.backbone.name,
        "image_size": model.cfg.image_size,
        "noise": args.noise,
        "machine": machine_info(),
        "variants": {k: VARIANTS[k].to_dict() for k in args.variants},
    }
    with tempfile.TemporaryDirectory(prefix="int8-accuracy-") as tmp:
        tmp = Path(tmp)
        export_model(args.checkpoint, tmp / "export", ExportConfig(verify=False), log=lambda m: None)
        files = {"fp32": tmp / "export" / "model.onnx", "fp16": tmp / "export" / "model.fp16.onnx"}
        train = load_calibration_set(args.data, args.calibration_images, meta, tmp, split="train")
        calibrate, held = train.split(args.calibration_images)
        report["calibration"] = calibrate.describe()
        report["quantize_seconds"], report["quantization"] = {}, {}
        for name in args.variants:
            start = time.perf_counter()
            files[name] = tmp / "export" / f"{name.replace(' ', '_')}.onnx"
            cfg = VARIANTS[name]
            if isinstance(cfg, NncfConfig):
                mask_mode = read_sidecar(files["fp32"]).graph.mask_mode
                control = nncf_accuracy_control(files["fp32"], held, meta, mask_mode, MAX_DROP)
                record = quantize_nncf(files["fp32"], files[name], cfg, GraphFeeds(calibrate, meta), control, log=print)
            else:
                record = quantize(files["fp32"], files[name], cfg, GraphFeeds(calibrate, meta), log=print)
            report["quantization"][name] = record  # what the sidecar would record (NNCF: what it reverted)
            report["quantize_seconds"][name] = round(time.perf_counter() - start, 1)
        test = load_calibration_set(args.data, 10**9, meta, tmp, split="test")  # every test image
        test.detections = noisy_gt_detections(load_annotations(hicodet_files(args.data, "test")[0]), args.noise, 0)
        test.source = f"{args.data} test split, GT boxes with noise r = {args.noise}"
        report["test"] = test.describe()
        ordered = {"fp32": files["fp32"], "int8": files.get("int8", files[args.variants[0]])}
        ordered.update(files)
        # the gate loads every file through model.json (load_backend): list the variants there
        sidecar = read_sidecar(files["fp32"])
        variants = {files[name].name: file_entry(files[name], "int8") for name in args.variants}
        write_sidecar(dataclasses.replace(sidecar, files={**sidecar.files, **variants}), tmp / "export" / "model.json")
        gate = accuracy_gate(ordered, test, max_drop=float("inf"), log=print)
    report["logits"] = gate.logits
    report["metrics"] = gate.metrics
    report["drop"] = {
        name: {k: 100 * (m[k] - gate.metrics[name][k]) for k in m if m[k] is not None and gate.metrics[name].get(k)}
        for name, m in [(n, gate.metrics["fp32"]) for n in gate.metrics if n != "fp32"]
    }
    report["openvino"] = gate.openvino  # precision → logits, metrics, drop against ONNX Runtime fp32, verdict
    report["note"] = gate.note
    write_json(report, args.out, indent=2)
    rows = {f"{p} (ONNX Runtime)": m for p, m in gate.metrics.items()}
    rows.update({f"{p} (OpenVINO)": row["metrics"] for p, row in gate.openvino.items()})
    print(f"{'':<30} {'HICO mAP':>9} {'full':>7} {'rare':>7} {'non-rare':>9}")
    for name, m in rows.items():
        cells = [m.get(k) for k in ("hico_mAP", "hicodet_full", "hicodet_rare", "hicodet_non_rare")]
        print(f"{name:<30} " + " ".join(f"{'n/a' if v is None else f'{100 * v:.2f}':>8}" for v in cells))
    if gate.note:
        print(gate.note)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
