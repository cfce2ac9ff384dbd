"""``defr-export``: checkpoint → ``model.onnx``, ``model.fp16.onnx``, ``model.json`` (+ a TensorRT engine).

The Python API is ``export_model`` (and ``export_and_check``, the demo's export stage). Files are
written into a staging folder beside ``OUT_DIR`` and moved in only when every step passed, so a
failed export leaves nothing behind. Exit codes: 0 done; 1 verification failed; 2 bad input, or
TensorRT missing for ``--engine`` (the ONNX files and sidecar are written first).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import onnx

from defr.export.fp16 import convert_to_fp16
from defr.export.onnx_export import DEFAULT_OPSET, ExportError, check_opset, export_onnx
from defr.export.sidecar import SIDECAR_NAME, build_sidecar, file_entry, sha256, write_sidecar
from defr.export.tensorrt_build import (
    ENGINE_PRECISIONS,
    TIMING_CACHE_NAME,
    EngineConfig,
    TensorRTUnavailableError,
    build_engine,
    check_limits,
    optimization_profile_shapes,
)
from defr.export.verify import VerificationError, check_graph, compare_detections, compare_with_torch
from defr.model import DEFR
from defr.model.vit import resize_positional_embedding
from defr.runtime.detector import RuntimeMeta

ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}


@dataclass
class ExportConfig:
    """What ``export_model`` writes; see ``defr-export --help`` for each field."""

    opset: int = DEFAULT_OPSET
    image_size: int | None = None  # None: the checkpoint's
    engine: str | None = None  # None, "fp32" or "fp16"
    max_batch: int = 8
    max_pairs: int = 1024
    plugin: bool = False
    plugin_library: Path | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        check_opset(self.opset)
        check_limits(self.image_size if self.image_size is not None else 1, self.max_batch, self.max_pairs)
        if self.engine is not None and self.engine not in ENGINE_PRECISIONS:
            raise ExportError(f"engine precision must be one of {ENGINE_PRECISIONS}, not {self.engine!r}")
        if self.plugin_library is not None and not (self.plugin and self.engine):
            raise ExportError("--plugin-library applies to --plugin with --engine")
        if self.plugin and self.engine and self.plugin_library is None:
            raise ExportError("--plugin with --engine needs --plugin-library PATH (the PairMaskedAttention plugin)")


@dataclass
class ExportResult:
    """Files written (name → sidecar entry), ONNX Runtime comparisons (precision → dict), the sidecar."""

    out_dir: Path
    files: dict[str, dict]
    comparisons: dict[str, dict] = field(default_factory=dict)
    sidecar: dict = field(default_factory=dict)

    def table(self) -> str:
        """The summary: file, size, max |Δ| of both outputs vs PyTorch, ONNX Runtime CPU latency."""
        rows = [("file", "precision", "size", "max |Δ| pair", "max |Δ| image", "error / tol", "latency")]
        for name, entry in self.files.items():
            c = self.comparisons.get(entry["precision"]) if name in ONNX_FILES.values() else None
            rows.append(_table_row(name, entry, c))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _table_row(name: str, entry: dict, c: dict | None) -> tuple[str, ...]:
    size = f"{entry['bytes'] / 2**20:.1f} MiB"
    if c is None:
        return (name, entry["precision"], size, "-", "-", "-", "-")
    err = max(c["error"].values())
    tol = c["tolerance"]
    return (
        name,
        entry["precision"],
        size,
        f"{c['max_abs']['pair_logits']:.2e}",
        f"{c['max_abs']['image_logits']:.2e}",
        f"{err:.1e} / {tol['limit']:.0e} {tol['kind']}",
        f"{c['latency_ms']:.1f} ms",
    )


def load_for_export(checkpoint: str | os.PathLike, image_size: int | None = None) -> DEFR:
    """Our checkpoint or the released ``.pth`` as a ``DEFR`` (eval mode), at ``image_size`` if given."""
    from defr.model import CheckpointError, OfficialCheckpointError
    from defr.runtime.detector import load_model

    try:
        model = load_model(checkpoint)
    except (CheckpointError, OfficialCheckpointError) as e:
        raise ExportError(str(e)) from None
    return model if image_size is None else at_image_size(model, image_size)


def at_image_size(model: DEFR, image_size: int) -> DEFR:
    """``model`` for inputs of ``image_size`` px: positional embeddings interpolated (bicubic)."""
    spec = model.cfg.backbone
    if spec.vit is None:
        raise ExportError(f"backbone {spec.name!r} is not a ViT: the pair graph needs a ViT backbone")
    if image_size == spec.image_size:
        return model
    if image_size % spec.vit.patch_size:
        raise ExportError(f"image size {image_size} is not a multiple of the patch size {spec.vit.patch_size}")
    vit = replace(spec.vit, image_size=image_size)
    resized = DEFR(replace(model.cfg, backbone=replace(spec, image_size=image_size, vit=vit)))
    state = model.state_dict()
    key = "backbone.positional_embedding"
    state[key] = resize_positional_embedding(state[key], vit.grid_size)
    resized.load_state_dict(state)
    return resized.eval()


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ExportConfig | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export ``checkpoint`` into ``out_dir``: ONNX (fp32, fp16), sidecar, and the engine if asked.

    Raises ``ExportError`` for bad input (nothing written), ``VerificationError`` when a graph fails
    verification (nothing written), ``TensorRTUnavailableError`` when an engine was asked for and
    TensorRT is missing (after the ONNX files and sidecar are written).
    """
    cfg = cfg or ExportConfig()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory")
    model = load_for_export(checkpoint, cfg.image_size)
    try:
        meta = RuntimeMeta.from_model(model)
    except (TypeError, ValueError) as e:  # not a ViT, or class names that are not "verb object" of HICO
        raise ExportError(f"{checkpoint}: {e}") from None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export-"))
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot write there ({e})") from None
    try:
        result, missing = _export_into(staging, out_dir, model, meta, checkpoint, cfg, log)
        out_dir.mkdir(exist_ok=True)
        for name in [*result.files, SIDECAR_NAME, TIMING_CACHE_NAME]:
            if (staging / name).is_file():
                os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if missing is not None:
        raise missing
    return result


def _export_into(
    staging: Path,
    out_dir: Path,
    model: DEFR,
    meta: RuntimeMeta,
    checkpoint: Path,
    cfg: ExportConfig,
    log: Callable[[str], None],
) -> tuple[ExportResult, TensorRTUnavailableError | None]:
    """Every file of the export, written into ``staging``; the TensorRT error is returned, not raised."""
    paths = {precision: staging / name for precision, name in ONNX_FILES.items()}
    log(f"exporting {checkpoint.name} ({model.cfg.backbone.name}, {model.cfg.image_size} px, opset {cfg.opset}) ...")
    export_onnx(model, paths["fp32"], cfg.opset, cfg.plugin)
    log("converting to float16 ...")
    onnx.save(convert_to_fp16(onnx.load(str(paths["fp32"]))), str(paths["fp16"]))
    comparisons = _verify(paths, model, cfg, log) if cfg.verify else {}
    files = {path.name: file_entry(path, precision) for precision, path in paths.items()}
    engine, missing = None, None
    if cfg.engine is not None:
        try:
            engine = _build_engine(staging, out_dir, model, cfg, log)
            files[engine["file"]] = file_entry(staging / engine["file"], cfg.engine)
        except TensorRTUnavailableError as e:
            missing = e
    sidecar = build_sidecar(
        meta,
        head=model.cfg.head,
        logit_scale=float(model.logit_scale.exp()),
        opset=cfg.opset,
        plugin=cfg.plugin,
        files=files,
        source={
            "checkpoint": checkpoint.name,
            "sha256": sha256(checkpoint),
            "backbone": model.cfg.backbone.name,
            "init": model.cfg.init,
        },
        engine=engine,
    )
    write_sidecar(sidecar, staging / SIDECAR_NAME)
    return ExportResult(out_dir, files, {k: c.to_dict() for k, c in comparisons.items()}, sidecar), missing


def _verify(paths: dict[str, Path], model: DEFR, cfg: ExportConfig, log: Callable[[str], None]) -> dict:
    comparisons = {}
    for precision, path in paths.items():
        check_graph(path)
        log(f"{path.name}: onnx.checker passed")
        if cfg.plugin:
            log(f"{path.name}: not run in ONNX Runtime (it has no PairMaskedAttention kernel)")
            continue
        c = compare_with_torch(path, model, precision)
        tol = c.tolerance
        log(
            f"{path.name}: ONNX Runtime vs PyTorch over (B, P) in {c.shapes}: max |Δ| pair_logits "
            f"{c.max_abs['pair_logits']:.2e}, image_logits {c.max_abs['image_logits']:.2e} "
            f"({tol.kind} error {max(c.error.values()):.1e}, tolerance {tol.limit:.0e}) "
            + ("ok" if c.passed else "FAILED")
        )
        comparisons[precision] = c
    failed = [c for c in comparisons.values() if not c.passed]
    if failed:
        names = ", ".join(f"{c.file} ({c.tolerance.kind} error {max(c.error.values()):.1e})" for c in failed)
        raise VerificationError(f"ONNX Runtime disagrees with PyTorch beyond tolerance: {names}")
    return comparisons


def _build_engine(staging: Path, out_dir: Path, model: DEFR, cfg: ExportConfig, log: Callable[[str], None]) -> dict:
    ecfg = EngineConfig(cfg.engine, model.cfg.image_size, cfg.max_batch, cfg.max_pairs, cfg.plugin_library)
    cache = staging / TIMING_CACHE_NAME
    if (out_dir / TIMING_CACHE_NAME).is_file():
        shutil.copy(out_dir / TIMING_CACHE_NAME, cache)
    build_engine(staging / ecfg.onnx_name, staging / ecfg.file_name, ecfg, cache, log)
    profile = optimization_profile_shapes(ecfg.image_size, ecfg.max_batch, ecfg.max_pairs)
    return {
        "file": ecfg.file_name,
        "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
        "plugin_library": str(Path(cfg.plugin_library).resolve()) if cfg.plugin_library else None,
    }


def export_and_check(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, synth_root: Path | None = None, max_images: int = 16
) -> dict:
    """The demo's export stage: export (verified), then, with ``synth_root``, detect HOIs on the first
    ``max_images`` synthetic test images with PyTorch and with ONNX Runtime and compare.

    synth_root holds ``instances_test2015.json`` and ``images/test2015``; its GT boxes are the
    detections. Returns a JSON-able summary.
    """
    result = export_model(checkpoint, out_dir, ExportConfig(), log=logging.getLogger(__name__).info)
    fp32 = result.comparisons["fp32"]
    summary = {
        "files": result.files,
        "comparisons": result.comparisons,
        "max_abs_diff_pair": fp32["max_abs"]["pair_logits"],
        "max_abs_diff_image": fp32["max_abs"]["image_logits"],
        "onnx_latency_ms": {p: c["latency_ms"] for p, c in result.comparisons.items()},
    }
    if synth_root is not None:
        onnx_path = result.out_dir / ONNX_FILES["fp32"]
        summary["detection"] = _compare_on_synthetic(Path(checkpoint), onnx_path, Path(synth_root), max_images)
    return summary


def _compare_on_synthetic(checkpoint: Path, onnx_path: Path, synth_root: Path, max_images: int) -> dict:
    from defr.runtime.box_noise import gt_detections, read_annotation_file
    from defr.runtime.cli import run_detection
    from defr.runtime.detector import HOIDetector

    data = read_annotation_file(Path(synth_root) / "instances_test2015.json")
    names = data["filenames"][:max_images]
    paths = [Path(synth_root) / "images" / "test2015" / n for n in names]
    dets = {n: gt_detections(a) for n, a in zip(names, data["annotation"], strict=False)}
    results, seconds = {}, {}
    for backend, detector in (
        ("torch", HOIDetector.from_checkpoint(checkpoint)),
        ("onnxruntime", HOIDetector.from_onnx(onnx_path, providers=["CPUExecutionProvider"])),
    ):
        start = time.perf_counter()
        results[backend] = run_detection(detector, paths, dets, progress=False)
        seconds[backend] = time.perf_counter() - start
    return {**compare_detections(results["torch"], results["onnxruntime"]), "seconds": seconds}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out-dir", required=True, type=click.Path(path_type=Path), help="Folder to write into.")
@click.option("--engine", type=click.Choice(ENGINE_PRECISIONS), help="Also build a TensorRT engine.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset (18 or newer).")
@click.option("--image-size", type=int, help="Input size S in px (default: the checkpoint's).")
@click.option("--max-batch", type=int, default=8, show_default=True, help="Engine profile: largest B.")
@click.option("--max-pairs", type=int, default=1024, show_default=True, help="Engine profile: largest P per call.")
@click.option("--plugin", is_flag=True, help="Emit the masked pair attention as one defr::PairMaskedAttention node.")
@click.option(
    "--plugin-library", type=click.Path(dir_okay=False, path_type=Path), help="TensorRT plugin library (--plugin)."
)
@click.option("--no-verify", is_flag=True, help="Skip onnx.checker and the ONNX Runtime comparison.")
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
    no_verify: bool,
) -> None:
    """Export a DEFR checkpoint (ours or the released .pth) to ONNX, float16 ONNX and a TensorRT engine."""
    log = click.echo
    try:
        cfg = ExportConfig(
            opset=opset,
            image_size=image_size,
            engine=engine,
            max_batch=max_batch,
            max_pairs=max_pairs,
            plugin=plugin,
            plugin_library=plugin_library,
            verify=not no_verify,
        )
        result = export_model(checkpoint, out_dir, cfg, log=log)
    except TensorRTUnavailableError as e:
        _fail(f"ONNX files written to {out_dir}, engine not built: {e}", 2)
    except VerificationError as e:
        _fail(str(e), 1)
    except ExportError as e:
        _fail(str(e), 2)
    log("")
    log(result.table())
    log(f"wrote {', '.join(result.files)} and {SIDECAR_NAME} to {result.out_dir}")


def _fail(message: str, code: int) -> None:
    click.echo(f"defr-export: error: {message}", err=True)
    sys.exit(code)
