"""Writing ``model.json``, the sidecar of an export: the typed ``Sidecar`` record (its schema, reader and
checks are ``defr.runtime.sidecar``) built from what the export wrote.

``file_entry`` records a file's precision, size and SHA-256, and for an ONNX file the size and
SHA-256 of every external-data file it loads, so a changed ``weights.bin`` is refused like a
changed ``model.onnx``.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx.external_data_helper import uses_external_data

from defr.export.errors import ExportError
from defr.files import write_json
from defr.machine import package_versions
from defr.model import DEFR
from defr.runtime.contract import RuntimeMeta
from defr.runtime.provenance import Int8Info
from defr.runtime.sidecar import (
    SIDECAR_FORMAT,
    SIDECAR_NAME,
    Digest,
    EngineInfo,
    ExporterInfo,
    FileEntry,
    GraphInfo,
    Sidecar,
    SourceInfo,
)

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_NAME",
    "build_sidecar",
    "external_data_files",
    "file_entry",
    "model_sidecar",
    "write_sidecar",
]


def external_data_files(path: str | os.PathLike) -> list[str]:
    """Names of the external-data files the ONNX file ``path`` loads (beside it), in first-use order;
    ExportError for a location outside its folder."""
    proto = onnx.load(str(path), load_external_data=False)
    names: list[str] = []
    tensors = [*proto.graph.initializer, *(t for f in proto.functions for n in f.node for t in _attr_tensors(n))]
    tensors += [t for n in proto.graph.node for t in _attr_tensors(n)]
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        location = next(e.value for e in tensor.external_data if e.key == "location")
        if Path(location).name != location:
            raise ExportError(f"{Path(path).name}: external data {location!r} is not a file beside it")
        if location not in names:
            names.append(location)
    return names


def _attr_tensors(node: onnx.NodeProto) -> list[onnx.TensorProto]:
    return [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]


def file_entry(path: str | os.PathLike, precision: str) -> FileEntry:
    """The sidecar entry of one exported file (ONNX files: with their external data's digests)."""
    path = Path(path)
    external = {}
    if path.suffix == ".onnx":
        external = {name: Digest.of(path.parent / name) for name in external_data_files(path)}
    return FileEntry(precision, Digest.of(path), external)


def build_sidecar(
    meta: RuntimeMeta,
    *,
    head: str,
    logit_scale: float,
    opset: int,
    plugin: bool,
    mask_mode: str,
    files: dict[str, FileEntry],
    source: dict,
    engine: EngineInfo | None = None,
    int8: Int8Info | None = None,
) -> Sidecar:
    """The sidecar of one export.

    meta: preprocessing and classes; head, logit_scale: the classifier (γ, not its log); mask_mode:
    the pair mask baked into the graph (``hard`` or ``released``); files: ``{file name:
    file_entry(...)}``; source: where the weights came from; engine: when an engine was built; int8:
    when an int8 file was written, how it was quantized and calibrated and the accuracy gate's
    measurements (``defr.export.int8`` or ``defr.export.nncf_int8``, ``defr.export.accuracy``).
    """
    return Sidecar(
        meta=meta,
        head=head,
        logit_scale=logit_scale,
        graph=GraphInfo(opset, plugin, mask_mode),
        files=dict(files),
        engine=engine,
        int8=int8,
        exporter=ExporterInfo(tuple(package_versions().items())),
        source=SourceInfo(**source),
    )


def model_sidecar(
    model: DEFR,
    files: dict[str, FileEntry],
    *,
    opset: int,
    plugin: bool,
    mask_mode: str,
    source: dict,
    engine: EngineInfo | None = None,
    int8: Int8Info | None = None,
) -> Sidecar:
    """``build_sidecar`` for the graph of ``model`` (preprocessing, classes, head and γ from the model)."""
    return build_sidecar(
        RuntimeMeta.from_model(model),
        head=model.cfg.head,
        logit_scale=float(model.logit_scale.exp()),
        opset=opset,
        plugin=plugin,
        mask_mode=mask_mode,
        files=files,
        source=source,
        engine=engine,
        int8=int8,
    )


def write_sidecar(sidecar: Sidecar, path: str | os.PathLike) -> Path:
    """Write ``sidecar`` as indented JSON, atomically, after reading it back through the reader's checks
    (a writer that produces what the reader refuses fails here, not in a user's runtime)."""
    d = sidecar.to_dict()
    Sidecar.from_dict(d, str(path))
    return write_json(d, path, indent=2)
