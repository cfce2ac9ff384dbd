"""``defr-export``: the command over ``defr.export.export_model``.

Errors are one line (``defr.clikit.one_line_errors``, as for ``defr``). Exit codes: 0 done; 1
verification failed (including the int8 accuracy gate); 2 bad input (bad calibration data
included), a file that cannot be read or written, or TensorRT missing for ``--engine`` (the ONNX
files and sidecar are written first); 128 + the signal's number when interrupted (Ctrl-C, or
SIGTERM, handled alike: the staged folder is removed and the output folder keeps the previous
export or the new one, never a mix). ``OUT_DIR`` is written through the output seam
(``defr.files.Folder``: staged beside it, swapped in whole, recorded in its parent's manifest).

The module imports only what the options need (``defr.export.defaults``); the exporter loads inside
``main``, where an interrupt is handled.
"""

from __future__ import annotations

from pathlib import Path

import click

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_QUANTIZER, ENGINE_PRECISIONS, QUANTIZERS
from defr.clikit import OutputFolder, mask_mode_option, one_line_errors
from defr.errors import DefrError
from defr.export.defaults import (
    CALIBRATION_IMAGES,
    CALIBRATION_SPLIT,
    DEFAULT_MAX_DROP,
    DEFAULT_OPSET,
    MAX_BATCH,
    MAX_PAIRS,
)
from defr.export.errors import VerificationError

EXIT_CODES = {VerificationError: 1, DefrError: 2, OSError: 2}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out-dir", required=True, type=OutputFolder(path_type=Path), help="Folder to write into.")
@click.option("--engine", type=click.Choice(ENGINE_PRECISIONS), help="Also build a TensorRT engine.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset (18 or newer).")
@click.option("--image-size", type=int, help="Input size S in px (default: the checkpoint's).")
@click.option("--max-batch", type=int, default=MAX_BATCH, show_default=True, help="Engine profile: max B.")
@click.option("--max-pairs", type=int, default=MAX_PAIRS, show_default=True, help="Engine profile: max P.")
@click.option("--plugin", is_flag=True, help="Emit the masked pair attention as one defr::PairMaskedAttention node.")
@click.option(
    "--plugin-library", type=click.Path(dir_okay=False, path_type=Path), help="TensorRT plugin library (--plugin)."
)
@mask_mode_option(
    default=DEFAULT_MASK_MODE,
    help="Baked into the graph: hard (the paper) or released (the released code's +1 bias); in model.json.",
)
@click.option("--int8", is_flag=True, help="Also write an int8 file (accuracy-gated; --quantizer says which).")
@click.option(
    "--quantizer",
    type=click.Choice(QUANTIZERS),
    default=DEFAULT_QUANTIZER,
    show_default=True,
    help="--int8: 'ort' writes model.int8.onnx for ONNX Runtime; 'nncf' writes model.int8.nncf.onnx for OpenVINO "
    '(NNCF, with accuracy control by the gate; pip install "defr[nncf]").',
)
@click.option(
    "--calibration",
    metavar="DATA",
    help="--int8 calibration data: a HICO / HICO-DET / JSONL dataset, a folder of images (+ detections), "
    "'synthetic' (the default: a built-in synthetic set) or 'none' (dynamic quantization).",
)
@click.option(
    "--calibration-images",
    type=int,
    default=CALIBRATION_IMAGES,
    show_default=True,
    help="Calibrate on N images; up to N others are held out for the accuracy gate.",
)
@click.option(
    "--calibration-split",
    type=click.Choice(["train", "test"]),
    default=CALIBRATION_SPLIT,
    show_default=True,
    help="Split of a --calibration dataset that has splits.",
)
@click.option(
    "--int8-max-drop",
    type=float,
    default=DEFAULT_MAX_DROP,
    show_default=True,
    help="Fail the export (exit 1) when int8 loses more mAP points than this against fp32 on held-out images.",
)
@click.option("--no-verify", is_flag=True, help="Skip onnx.checker, the ONNX Runtime comparison and the int8 gate.")
def main(
    checkpoint: Path,
    out_dir: Path,
    engine: str | None,
    opset: int,
    image_size: int | None,
    max_batch: int,
    max_pairs: int,
    plugin: bool,
    plugin_library: Path | None,
    mask_mode: str,
    int8: bool,
    quantizer: str,
    calibration: str | None,
    calibration_images: int,
    calibration_split: str,
    int8_max_drop: float,
    no_verify: bool,
) -> None:
    """Export a DEFR checkpoint (ours or the released .pth) to ONNX, float16 and int8 ONNX and a TensorRT engine."""
    log = click.echo
    left = f"nothing half-written: {out_dir} holds the previous export (or none), or this one if it had been moved in"
    with one_line_errors(EXIT_CODES, interrupted=left):
        # here, not at the top: torch and ONNX take seconds to import, and Ctrl-C then must give one line
        from defr.export.exporter import ExportConfig, export_model
        from defr.export.sidecar import SIDECAR_NAME

        cfg = ExportConfig(
            opset=opset,
            image_size=image_size,
            engine=engine,
            max_batch=max_batch,
            max_pairs=max_pairs,
            plugin=plugin,
            plugin_library=plugin_library,
            verify=not no_verify,
            mask_mode=mask_mode,
            int8=int8,
            quantizer=quantizer,
            calibration=calibration,
            calibration_images=calibration_images,
            calibration_split=calibration_split,
            int8_max_drop=int8_max_drop,
        )
        result = export_model(checkpoint, out_dir, cfg, log=log)  # OUT_DIR: a Folder output of the seam
    log("")
    log(result.table())
    log(f"wrote {', '.join(result.files)} and {SIDECAR_NAME} to {result.out_dir}")


if __name__ == "__main__":
    main()
