"""``export_model``: checkpoint → ``model.onnx``, ``model.fp16.onnx``, ``model.json`` (+ ``model.int8.onnx``
with ``int8``, + a TensorRT engine).

``OUT_DIR`` is a ``defr.files.Folder`` output of the seam: the files are written into a staged folder
beside it and swapped in only when every step passed, so a failed export leaves nothing behind. The
command is ``defr.export.cli``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from defr.choices import DEFAULT_MASK_MODE, DEFAULT_QUANTIZER, ENGINE_PRECISIONS, QUANTIZERS, Quantizer, check_mask_mode
from defr.errors import DefrError
from defr.export.accuracy import accuracy_gate, nncf_accuracy_control
from defr.export.calibration import SYNTHETIC, CalibrationSet, GraphFeeds, load_calibration_set
from defr.export.defaults import (
    CALIBRATION_IMAGES,
    CALIBRATION_SPLIT,
    DEFAULT_MAX_DROP,
    DEFAULT_OPSET,
    MAX_BATCH,
    MAX_PAIRS,
)
from defr.export.errors import ExportError, VerificationError
from defr.export.fp16 import convert_to_fp16
from defr.export.int8 import INT8_FILE, Int8Config
from defr.export.int8 import quantize as quantize_int8
from defr.export.nncf_int8 import NNCF_FILE, AccuracyControl, NncfConfig, quantize_nncf
from defr.export.onnx_export import check_opset, export_onnx
from defr.export.sidecar import SIDECAR_NAME, file_entry, model_sidecar, write_sidecar
from defr.export.tensorrt_build import (
    TIMING_CACHE_NAME,
    EngineConfig,
    build_engine,
    check_limits,
    engine_info,
)
from defr.export.verify import check_graph, compare_with_torch
from defr.files import Folder, OutputSet, clean_stale_staging
from defr.model import DEFR, CheckpointError, load_model
from defr.optional import MissingDependency
from defr.runtime.contract import RuntimeMeta
from defr.runtime.provenance import Int8Info
from defr.runtime.sidecar import EngineInfo, FileEntry, Sidecar, sha256

ONNX_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}
LEGACY_STAGING = "export"  # staging folders of earlier versions: .OUT.export-PID-XXXX beside the output folder
NO_CALIBRATION = "none"  # --calibration none: dynamic int8 quantization
INT8_FILES: dict[Quantizer, str] = {"ort": INT8_FILE, "nncf": NNCF_FILE}  # the int8 file each quantizer writes
# the runtime each quantizer's file is made for
INT8_RUNTIMES: dict[Quantizer, str] = {"ort": "onnxruntime", "nncf": "openvino"}


@dataclass
class ExportConfig:
    """What ``export_model`` writes; see ``defr-export --help`` for each field."""

    opset: int = DEFAULT_OPSET
    image_size: int | None = None  # None: the checkpoint's
    engine: str | None = None  # None, "fp32" or "fp16"
    max_batch: int = MAX_BATCH
    max_pairs: int = MAX_PAIRS
    plugin: bool = False
    plugin_library: Path | None = None
    verify: bool = True
    mask_mode: str = DEFAULT_MASK_MODE  # baked into the graph; recorded in model.json
    int8: bool = False  # also write model.int8.onnx
    calibration: str | None = None  # a dataset folder, "synthetic" (None: the same) or "none" (dynamic int8)
    calibration_images: int = CALIBRATION_IMAGES
    calibration_split: str = CALIBRATION_SPLIT
    int8_max_drop: float = DEFAULT_MAX_DROP  # mAP points int8 may lose against fp32 on the held-out images
    quantization: Int8Config = field(default_factory=Int8Config)  # method "static" unless calibration is "none"
    quantizer: Quantizer = DEFAULT_QUANTIZER  # whose int8 file: ort → model.int8.onnx, nncf → model.int8.nncf.onnx
    nncf: NncfConfig = field(default_factory=NncfConfig)  # how NNCF quantizes (quantizer "nncf")

    def __post_init__(self) -> None:
        check_opset(self.opset)
        if self.calibration_images < 1:
            raise ExportError(f"--calibration-images must be >= 1, not {self.calibration_images}")
        if not self.int8_max_drop >= 0:
            raise ExportError(f"--int8-max-drop must be >= 0 mAP points, not {self.int8_max_drop}")
        if self.calibration_split not in ("train", "test"):
            raise ExportError(f"--calibration-split must be train or test, not {self.calibration_split!r}")
        if self.calibration is not None and not self.int8:
            raise ExportError("--calibration applies to --int8")
        if self.int8 and self.plugin:
            raise ExportError("--int8 quantizes the plain graph; export it without --plugin")
        if self.quantizer not in QUANTIZERS:
            raise ExportError(f"--quantizer must be one of {QUANTIZERS}, not {self.quantizer!r}")
        if self.quantizer != "ort" and not self.int8:
            raise ExportError(f"--quantizer {self.quantizer} applies to --int8")
        if self.quantizer == "nncf" and self.calibration == NO_CALIBRATION:
            raise ExportError("--quantizer nncf calibrates (static quantization only); drop --calibration none")
        if self.calibration == NO_CALIBRATION and self.quantization.method == "static":
            self.quantization = dataclasses.replace(self.quantization, method="dynamic")
        check_mask_mode(self.mask_mode)
        check_limits(self.image_size if self.image_size is not None else 1, self.max_batch, self.max_pairs)
        if self.engine is not None and self.engine not in ENGINE_PRECISIONS:
            raise ExportError(f"engine precision must be one of {ENGINE_PRECISIONS}, not {self.engine!r}")
        if self.plugin_library is not None and not (self.plugin and self.engine):
            raise ExportError("--plugin-library applies to --plugin with --engine")


@dataclass
class ExportResult:
    """Files written (name → sidecar entry), ONNX Runtime comparisons (precision → dict), the sidecar."""

    out_dir: Path
    files: dict[str, FileEntry]
    comparisons: dict[str, dict] = field(default_factory=dict)
    sidecar: Sidecar | None = None

    def table(self) -> str:
        """The summary: file, size, max |Δ| of both outputs vs PyTorch, ONNX Runtime CPU latency."""
        rows = [("file", "precision", "size", "max |Δ| pair", "max |Δ| image", "error / tol", "latency")]
        for name, entry in self.files.items():
            c = self.comparisons.get(entry.precision) if name in (*ONNX_FILES.values(), *INT8_FILES.values()) else None
            rows.append(_table_row(name, entry, c))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _table_row(name: str, entry: FileEntry, c: dict | None) -> tuple[str, ...]:
    size = f"{entry.digest.bytes / 2**20:.1f} MiB"
    if c is None:
        return (name, entry.precision, size, "-", "-", "-", "-")
    err = max(c["error"].values())
    tol = c["tolerance"]
    return (
        name,
        entry.precision,
        size,
        f"{c['max_abs']['pair_logits']:.2e}",
        f"{c['max_abs']['image_logits']:.2e}",
        f"{err:.1e} / {tol['limit']:.0e} {tol['kind']}",
        f"{c['latency_ms']:.1f} ms",
    )


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: ExportConfig | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export ``checkpoint`` into ``out_dir``: ONNX (fp32, fp16), sidecar, and the engine if asked.

    ``out_dir`` is a ``defr.files.Folder`` output: the files are built in a staged folder beside it,
    then the folder is swapped in as a whole in the set's journal: a reader or a kill at any instant
    sees the previous export or the new one, never a mix. The other files and folders of an existing
    ``out_dir`` are kept (hard-linked, or copied, into the new set). An ``out_dir`` that is a symbolic
    link (or lies under one) is resolved first: the export goes into the folder it points to, and the
    link stays. An interrupt (Ctrl-C, or SIGTERM turned into one by the command) removes the staged
    folder. ``OutputRefused`` (before any work) for an ``out_dir`` that is or holds the checkpoint, the
    plugin library or the calibration data among the files it writes, or that another export is writing.

    Raises ``ExportError`` for bad input, an output folder that cannot be written (checked before
    any work) or a graph that fails verification (``VerificationError``) — nothing written;
    ``ExportError`` when an engine was asked for and TensorRT is missing (after the ONNX
    files and sidecar are written). All from ``defr.export.errors``.
    """
    cfg = cfg or ExportConfig()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a directory")
    calibration = Path(cfg.calibration) if cfg.calibration and Path(cfg.calibration).exists() else None
    folder = Folder(out_dir, entries=export_entries(cfg), guard=False)  # OUT_DIR is the user's: kept but its files
    outputs = OutputSet({"--out-dir": folder}, inputs=[checkpoint, cfg.plugin_library, calibration])
    check_writable(out_dir)
    with outputs as staged:  # taken before the work: a second export into the folder is refused at once
        try:
            model = load_model(checkpoint, cfg.image_size)
            meta = RuntimeMeta.from_model(model)
        except DefrError as e:  # not a model file, not a ViT, or class names that are not "verb object" of HICO
            raise ExportError(str(e) if isinstance(e, CheckpointError) else f"{checkpoint}: {e}") from None
        clean_stale_staging(out_dir, LEGACY_STAGING)  # what a killed run of an earlier version left
        staging = staged["--out-dir"]
        result, missing = _export_into(staging, out_dir, model, meta, checkpoint, cfg, log)
        external = {name for entry in result.files.values() for name in entry.external_data}
        _prune(staging, keep={*result.files, *external, SIDECAR_NAME, TIMING_CACHE_NAME})
    if missing is not None:
        raise missing
    return result


def export_entries(cfg: ExportConfig) -> tuple[str, ...]:
    """The names an export with ``cfg`` writes in its folder (an input among them would be destroyed)."""
    names = [*ONNX_FILES.values(), SIDECAR_NAME, TIMING_CACHE_NAME]
    names += [INT8_FILES[cfg.quantizer]] if cfg.int8 else []
    names += [f"model.{cfg.engine}.engine"] if cfg.engine else []
    return tuple(names)


def check_writable(out_dir: Path) -> None:
    """ExportError (before any work) unless files can be created in ``out_dir`` and beside it."""
    for folder in (out_dir, out_dir.parent):
        if not folder.exists():
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".defr-export-probe-"):
                pass
        except OSError as e:
            raise ExportError(f"{out_dir}: cannot write into {folder} ({e.strerror})") from None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot create {out_dir.parent} ({e.strerror})") from None


def _prune(staging: Path, keep: set[str]) -> None:
    """Remove what the steps left in ``staging`` besides the export's files (calibration data, scratch)."""
    for path in staging.iterdir():
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _export_into(
    staging: Path,
    out_dir: Path,
    model: DEFR,
    meta: RuntimeMeta,
    checkpoint: Path,
    cfg: ExportConfig,
    log: Callable[[str], None],
) -> tuple[ExportResult, ExportError | None]:
    """Every file of the export, written into ``staging``; the missing-TensorRT error is returned, not raised."""
    paths = {precision: staging / name for precision, name in ONNX_FILES.items()}
    log(
        f"exporting {checkpoint.name} ({model.cfg.backbone.name}, {model.cfg.image_size} px, opset {cfg.opset}, "
        f"mask mode {cfg.mask_mode}) ..."
    )
    calibration = _calibration_sets(staging, meta, cfg, log) if cfg.int8 else None
    export_onnx(model, paths["fp32"], cfg.opset, cfg.plugin, cfg.mask_mode)
    log("converting to float16 ...")
    onnx.save(convert_to_fp16(onnx.load(str(paths["fp32"]))), str(paths["fp16"]))
    int8 = None
    if calibration is not None:
        paths["int8"] = staging / INT8_FILES[cfg.quantizer]
        int8 = _quantize(paths, meta, calibration, cfg, log)
    comparisons = _verify(paths, model, cfg, log) if cfg.verify else {}
    files = {path.name: file_entry(path, precision) for precision, path in paths.items()}
    source = {
        "checkpoint": checkpoint.name,
        "sha256": sha256(checkpoint),
        "backbone": model.cfg.backbone.name,
        "init": model.cfg.init,
    }
    sidecar = model_sidecar(
        model, files, opset=cfg.opset, plugin=cfg.plugin, mask_mode=cfg.mask_mode, source=source, int8=int8
    )
    # Written now so that the int8 gate loads the files as every user does (load_backend, checksums included).
    write_sidecar(sidecar, staging / SIDECAR_NAME)
    if int8 is not None:
        int8 = dataclasses.replace(int8, gate=_gate(paths, calibration[1], cfg, log))
    engine, missing = None, None
    if cfg.engine is not None:
        try:
            engine = _build_engine(staging, out_dir, model, cfg, log)
            files[engine.file] = file_entry(staging / engine.file, cfg.engine)
        except MissingDependency as e:
            missing = ExportError(f"ONNX files written to {out_dir}, engine not built: {e}")
    sidecar = dataclasses.replace(sidecar, files=files, engine=engine, int8=int8)
    write_sidecar(sidecar, staging / SIDECAR_NAME)
    return ExportResult(out_dir, files, {k: c.to_dict() for k, c in comparisons.items()}, sidecar), missing


def _calibration_sets(
    staging: Path, meta: RuntimeMeta, cfg: ExportConfig, log: Callable[[str], None]
) -> tuple[CalibrationSet | None, CalibrationSet]:
    """(calibration images or None for dynamic quantization, held-out images for the gate), read before
    anything is exported so bad calibration data fails fast. ``--calibration none`` gates on the built-in set."""
    source = None if cfg.calibration in (None, NO_CALIBRATION, SYNTHETIC) else cfg.calibration
    full = load_calibration_set(source, cfg.calibration_images, meta, staging, cfg.calibration_split)
    if cfg.quantization.method == "dynamic":
        log(
            "int8: no calibration data (--calibration none): dynamic quantization, activations quantized per call; "
            f"the accuracy gate runs on {len(full)} images of the {full.source}"
        )
        return None, full
    calibrate, held_out = full.split(cfg.calibration_images)
    log(
        f"int8: {full.source}, {full.format} layout, pairs from {full.boxes} boxes: {len(calibrate)} images to "
        f"calibrate, {len(held_out)} held out for the accuracy gate"
    )
    return calibrate, held_out


def _quantize(
    paths: dict[str, Path],
    meta: RuntimeMeta,
    calibration: tuple[CalibrationSet | None, CalibrationSet],
    cfg: ExportConfig,
    log: Callable[[str], None],
) -> Int8Info:
    calibrate, held_out = calibration
    feeds = GraphFeeds(calibrate, meta) if calibrate is not None else None
    if cfg.quantizer == "nncf":
        log("quantizing to int8 with NNCF (for OpenVINO) ...")
        control = _nncf_control(paths["fp32"], held_out, meta, cfg, log)
        settings = quantize_nncf(paths["fp32"], paths["int8"], cfg.nncf, feeds, control, log)
    else:
        log(f"quantizing to int8 ({cfg.quantization.method}) ...")
        settings = quantize_int8(paths["fp32"], paths["int8"], cfg.quantization, feeds, log)
    return Int8Info(
        cfg.quantizer,
        {k: v for k, v in settings.items() if k != "quantizer"},
        calibration=calibrate.describe() if calibrate is not None else None,
        held_out=held_out.describe(),
    )


def _nncf_control(
    fp32_path: Path, held_out: CalibrationSet, meta: RuntimeMeta, cfg: ExportConfig, log: Callable[[str], None]
) -> AccuracyControl | None:
    """NNCF's accuracy control by the gate (``nncf_accuracy_control``); None with ``--no-verify`` or
    held-out images without labels or ground truth (no mAP to keep)."""
    if not cfg.verify:
        log("int8: NNCF without accuracy control (--no-verify)")
        return None
    return nncf_accuracy_control(fp32_path, held_out, meta, cfg.mask_mode, cfg.int8_max_drop)


def _gate(
    paths: dict[str, Path], held_out: CalibrationSet, cfg: ExportConfig, log: Callable[[str], None]
) -> dict | None:
    if not cfg.verify:
        log("int8: accuracy gate skipped (--no-verify)")
        return None
    return accuracy_gate(paths, held_out, cfg.int8_max_drop, log, runtime=INT8_RUNTIMES[cfg.quantizer]).to_dict()


def _verify(paths: dict[str, Path], model: DEFR, cfg: ExportConfig, log: Callable[[str], None]) -> dict:
    comparisons = {}
    for precision, path in paths.items():
        check_graph(path)
        log(f"{path.name}: onnx.checker passed")
        if cfg.plugin:
            log(f"{path.name}: not run in ONNX Runtime (it has no PairMaskedAttention kernel)")
            continue
        c = compare_with_torch(path, model, precision, mask_mode=cfg.mask_mode)
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


def _build_engine(
    staging: Path, out_dir: Path, model: DEFR, cfg: ExportConfig, log: Callable[[str], None]
) -> EngineInfo:
    ecfg = EngineConfig(cfg.engine, model.cfg.image_size, cfg.max_batch, cfg.max_pairs, cfg.plugin, cfg.plugin_library)
    cache = staging / TIMING_CACHE_NAME
    if (out_dir / TIMING_CACHE_NAME).is_file():
        shutil.copy(out_dir / TIMING_CACHE_NAME, cache)
    build_engine(staging / ecfg.onnx_name, staging / ecfg.file_name, ecfg, cache, log)
    return engine_info(ecfg)
