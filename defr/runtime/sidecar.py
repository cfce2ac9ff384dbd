"""``model.json``, the sidecar ``defr-export`` writes beside an exported graph or engine: the typed
``Sidecar`` record, its schema (the only place that knows the file's keys), reading and checking.

It records preprocessing (input size, patch size, mean/std), the class names and their HICO
objects, the head, the graph (opset, plugin node, the baked-in mask mode, inputs and outputs), the
TensorRT engine's profile and plugin, the int8 record, and a size and SHA-256 for every file of
the export — with the external-data files an ONNX file loads (``weights.bin`` beside
``model.onnx``), so every byte a model is computed from is covered.

``Sidecar.from_dict`` validates the whole record once, with a one-line ``SidecarError`` naming
the file and the field (``files`` missing or not an object, ``input.image_size`` not a positive
integer, ``input.std`` with a zero, ``class_objects`` outside HICO's 80 objects, an unknown
``mask_mode`` or precision, ...); inside, code reads typed fields and never indexes the dict.
Backends read it from the folder of the file they load (``read_sidecar``) and refuse a file whose
checksum, or whose external data's checksum, does not match (``Sidecar.check_file``). The writer
is ``defr.export.sidecar``.

The record covers itself too (format ``defr-export/3``): ``sidecar_sha256`` is the SHA-256 of the rest of the
record (``own_digest``), so an edited ``mean`` or reordered ``class_objects`` — which change results, not the
graph — is refused at load like an edited graph. Formats ``/2`` and ``/1`` (``/1`` had an unread ``score_rule``
block and no external-data entries) are read too, their own fields unchecked: export again to cover them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defr import vocab
from defr.choices import (
    DEFAULT_MASK_MODE,
    DEFAULT_QUANTIZER,
    FILE_PRECISIONS,
    MASK_MODES,
    QUANTIZERS,
    MaskMode,
    Precision,
)
from defr.errors import DefrError
from defr.jsonio import read_json
from defr.runtime.contract import INPUT_NAMES, OUTPUT_NAMES, RuntimeMeta
from defr.runtime.provenance import ExporterInfo, Int8Info, SourceInfo

SIDECAR_NAME = "model.json"
SIDECAR_FORMAT = "defr-export/3"
READABLE_FORMATS = ("defr-export/1", "defr-export/2", SIDECAR_FORMAT)
OWN_DIGEST = "sidecar_sha256"  # the record's digest of its other fields (format 3 on)
ENGINE_PLUGINS = ("qdp-aot", "library")  # how an engine runs the plugin node: built in (AOT) or a library
PREPROCESS = "RGB, resize to image_size × image_size (bicubic, aspect not kept), /255, (x - mean) / std"
MAX_SIDECAR_BYTES = 64 << 20
_LEGACY_KEYS = {"defr-export/1": {"score_rule"}}  # written by format 1, read by nothing
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SidecarError(DefrError, ValueError):
    """A sidecar that is missing, unreadable, of another format, malformed, or that does not describe a file."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the record --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """Size and SHA-256 of one file."""

    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> Digest:
        return cls(Path(path).stat().st_size, sha256(path))

    def to_dict(self) -> dict:
        return {"bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class FileEntry:
    """One file of the export: its precision (``FILE_PRECISIONS``), digest, and the external-data files
    it loads (name in the export folder → digest; ONNX files over 2 GB keep their weights there)."""

    precision: Precision
    digest: Digest
    external_data: dict[str, Digest] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.digest.sha256

    def to_dict(self) -> dict:
        d = {"precision": self.precision, **self.digest.to_dict()}
        if self.external_data:
            d["external_data"] = {name: x.to_dict() for name, x in self.external_data.items()}
        return d


@dataclass(frozen=True)
class GraphInfo:
    """The exported graph: ONNX opset, whether the pair attention is one ``PairMaskedAttention`` node,
    and the mask mode baked into it (``MASK_MODES``)."""

    opset: int
    plugin: bool
    mask_mode: MaskMode


@dataclass(frozen=True)
class EngineInfo:
    """A TensorRT engine of the export: its file, the optimisation profile (graph input → (min, opt,
    max) shape), and how it runs the plugin node (``ENGINE_PLUGINS`` or None; ``plugin_library``: the
    compiled library's path for ``library``)."""

    file: str
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    plugin: str | None = None
    plugin_library: str | None = None

    @property
    def max_batch(self) -> int:
        """The largest B the engine accepts."""
        return self.profile["images"][2][0]

    @property
    def max_pairs(self) -> int:
        """The largest P (pairs per call, over the batch) the engine accepts."""
        return self.profile["pair_index"][2][0]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "profile": {name: [list(s) for s in shapes] for name, shapes in self.profile.items()},
            "plugin": self.plugin,
            "plugin_library": self.plugin_library,
        }


@dataclass(frozen=True)
class Sidecar:
    """``model.json`` as a typed record (module docstring). meta: preprocessing and classes; head: the
    classifier's type; logit_scale: γ (not its log); files: file name → ``FileEntry``; engine: when an
    engine was built; int8: how the int8 file was quantized, calibrated and gated; exporter: package
    versions; source: the checkpoint's name, SHA-256, backbone, init (``defr.runtime.provenance``: records
    for people, nothing branches on them)."""

    meta: RuntimeMeta
    head: str
    logit_scale: float
    graph: GraphInfo
    files: dict[str, FileEntry]
    engine: EngineInfo | None = None
    int8: Int8Info | None = None
    exporter: ExporterInfo = field(default_factory=ExporterInfo)
    source: SourceInfo = field(default_factory=SourceInfo)

    # --- the file ---

    def to_dict(self) -> dict:
        """The ``model.json`` record, ``sidecar_sha256`` included (``own_digest`` of the rest)."""
        d = self._fields()
        return {**d, OWN_DIGEST: own_digest(d)}

    def _fields(self) -> dict:
        m, s = self.meta, self.meta.image_size
        classes = len(m.class_names)
        return {
            "format": SIDECAR_FORMAT,
            "classes": list(m.class_names),
            "class_objects": list(m.class_objects),
            "input": {
                "image_size": s,
                "patch_size": m.patch_size,
                "mean": list(m.mean),
                "std": list(m.std),
                "preprocess": PREPROCESS,
            },
            "head": {"type": self.head, "logit_scale": self.logit_scale},
            "graph": {
                "inputs": graph_inputs(s),
                "outputs": {"pair_logits": ["P", classes], "image_logits": ["B", classes]},
                "opset": self.graph.opset,
                "plugin": self.graph.plugin,
                "mask_mode": self.graph.mask_mode,
            },
            "engine": self.engine.to_dict() if self.engine is not None else None,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
            "exporter": self.exporter.to_dict(),
            "source": self.source.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = SIDECAR_NAME) -> Sidecar:
        """Validate ``d`` (parsed ``model.json``) into a ``Sidecar``; SidecarError naming ``where`` and the field."""
        return _Reader(where).sidecar(d)

    # --- checks a loader makes ---

    def entry(self, model_path: str | os.PathLike) -> FileEntry:
        """The entry of ``model_path`` (by name); SidecarError when the sidecar does not list it."""
        model_path = Path(model_path)
        entry = self.files.get(model_path.name)
        if entry is None:
            raise SidecarError(
                f"{model_path}: not listed in {SIDECAR_NAME} (it lists {sorted(self.files)}); "
                "load a file of that export or export again"
            )
        return entry

    def check_file(self, model_path: str | os.PathLike) -> FileEntry:
        """The entry of ``model_path`` after checking its SHA-256 and those of the external-data files it
        loads (beside it); SidecarError when any differs or is missing."""
        model_path = Path(model_path)
        entry = self.entry(model_path)
        if sha256(model_path) != entry.sha256:
            raise SidecarError(f"{model_path}: checksum differs from {SIDECAR_NAME}: the file was changed after export")
        for name, digest in entry.external_data.items():
            data = model_path.parent / name
            if not data.is_file():
                raise SidecarError(f"{data}: missing (external data of {model_path.name}, listed in {SIDECAR_NAME})")
            if sha256(data) != digest.sha256:
                raise SidecarError(
                    f"{data}: checksum differs from {SIDECAR_NAME}: the external data of {model_path.name} "
                    "was changed after export"
                )
        return entry


def own_digest(d: dict) -> str:
    """SHA-256 of the record ``d`` without ``sidecar_sha256``, as canonical JSON (sorted keys, no spaces, UTF-8):
    the same for the dict written and the dict read back."""
    rest = {k: v for k, v in d.items() if k != OWN_DIGEST}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_own_digest(d: dict, path: Path) -> None:
    """SidecarError when a format-3 record lacks its digest or its fields no longer match it."""
    if d.get("format") != SIDECAR_FORMAT:
        return  # formats 1 and 2 predate the digest
    recorded = d.get(OWN_DIGEST)
    if not isinstance(recorded, str) or not _SHA256.fullmatch(recorded):
        raise SidecarError(f"{path}: {OWN_DIGEST} is missing or not a SHA-256; export the model again")
    if own_digest(d) != recorded:
        raise SidecarError(
            f"{path}: edited after export (its fields no longer match {OWN_DIGEST}: a changed mean, class order or "
            "mask mode changes results silently); export the model again"
        )


def graph_inputs(image_size: int) -> dict[str, list]:
    """The graph inputs' shapes as ``model.json`` records them (B and P dynamic)."""
    return {"images": ["B", 3, image_size, image_size], "boxes_h": ["P", 4], "boxes_o": ["P", 4], "pair_index": ["P"]}


def read_sidecar(model_path: str | os.PathLike) -> Sidecar:
    """The sidecar beside ``model_path`` (``model.json`` in its folder), parsed and validated."""
    path = Path(model_path).parent / SIDECAR_NAME
    if not path.is_file():
        raise SidecarError(f"{model_path}: no {SIDECAR_NAME} beside it (written by defr-export with the model)")
    d = read_json(path, max_bytes=MAX_SIDECAR_BYTES, error=SidecarError)
    sidecar = Sidecar.from_dict(d, str(path))  # fields first: a malformed field is named as such
    _check_own_digest(d, path)
    return sidecar


# --- validation ----------------------------------------------------------------------------------------------------


class _Reader:
    """Field-by-field checks of a parsed sidecar; every error names ``where`` and the field's path."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, name: str, problem: str) -> SidecarError:
        return SidecarError(f"{self.where}: {name} {problem}; export the model again with defr-export")

    def obj(self, d: dict, key: str, prefix: str = "") -> dict:
        value = self.get(d, key, prefix)
        if not isinstance(value, dict):
            raise self.fail(prefix + key, f"must be a JSON object, not {_kind(value)}")
        return value

    def get(self, d: dict, key: str, prefix: str = "") -> Any:
        if key not in d:
            raise self.fail(prefix + key, "is missing")
        return d[key]

    def integer(self, value: Any, name: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"must be an integer, not {_kind(value)}")
        if value < minimum:
            raise self.fail(name, f"must be >= {minimum}, not {value}")
        return value

    def number(self, value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, not {_kind(value)}")
        return float(value)

    def string(self, value: Any, name: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, not {_kind(value)}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"must be one of {list(choices)}, not {value!r}")
        return value

    def sidecar(self, d: Any) -> Sidecar:
        if not isinstance(d, dict):
            raise SidecarError(f"{self.where}: not a defr-export sidecar ({_kind(d)}, not a JSON object)")
        fmt = d.get("format")
        if fmt not in READABLE_FORMATS:
            raise SidecarError(
                f"{self.where}: not a defr-export sidecar (format {fmt!r}, expected one of {list(READABLE_FORMATS)})"
            )
        known = {"format", "classes", "class_objects", "input", "head", "graph", "engine", "int8", "files"}
        unknown = set(d) - known - {"exporter", "source", OWN_DIGEST} - _LEGACY_KEYS.get(fmt, set())
        if unknown:
            raise self.fail(f"key(s) {sorted(unknown)}", f"are not part of format {fmt}")
        meta = self.meta(d)
        head = self.obj(d, "head")
        graph = self.graph(self.obj(d, "graph"), meta)
        engine = d.get("engine")
        int8 = None if d.get("int8") is None else self.int8(d["int8"])
        exporter, source = self.exporter(d.get("exporter", {})), self.source(d.get("source", {}))
        files = self.files(self.obj(d, "files"))
        engine = None if engine is None else self.engine(engine, meta.image_size, files)
        return Sidecar(
            meta=meta,
            head=self.string(self.get(head, "type", "head."), "head.type"),
            logit_scale=self.number(self.get(head, "logit_scale", "head."), "head.logit_scale"),
            graph=graph,
            files=files,
            engine=engine,
            int8=int8,
            exporter=exporter,
            source=source,
        )

    def int8(self, d: Any) -> Int8Info:
        if not isinstance(d, dict):
            raise self.fail("int8", f"must be a JSON object or null, not {_kind(d)}")
        # format 2 had ONNX Runtime's quantizer only, and did not name it
        quantizer = self.string(d.get("quantizer", DEFAULT_QUANTIZER), "int8.quantizer", QUANTIZERS)
        parts = {}
        for name in ("calibration", "held_out", "gate"):
            parts[name] = d.get(name)
            if parts[name] is not None and not isinstance(parts[name], dict):
                raise self.fail(f"int8.{name}", f"must be a JSON object or null, not {_kind(parts[name])}")
        settings = {k: v for k, v in d.items() if k not in Int8Info.NAMED}
        return Int8Info(quantizer, settings, **parts)

    def exporter(self, d: Any) -> ExporterInfo:
        if not isinstance(d, dict):
            raise self.fail("exporter", f"must be a JSON object, not {_kind(d)}")
        for name, version in d.items():
            if version is not None:
                self.string(version, f"exporter.{name}")
        return ExporterInfo(tuple(d.items()))

    def source(self, d: Any) -> SourceInfo:
        if not isinstance(d, dict):
            raise self.fail("source", f"must be a JSON object, not {_kind(d)}")
        known = {f: d.get(f) for f in ("checkpoint", "sha256", "backbone")}
        for name, value in known.items():
            if value is not None:
                self.string(value, f"source.{name}")
        init = d.get("init")
        if init is not None and not isinstance(init, dict):
            raise self.fail("source.init", f"must be a JSON object, not {_kind(init)}")
        return SourceInfo(**known, init=init)

    def meta(self, d: dict) -> RuntimeMeta:
        inp = self.obj(d, "input")
        image_size = self.integer(self.get(inp, "image_size", "input."), "input.image_size")
        patch_size = self.integer(self.get(inp, "patch_size", "input."), "input.patch_size")
        if image_size % patch_size:
            raise self.fail("input.image_size", f"{image_size} is not a multiple of input.patch_size {patch_size}")
        norm = {}
        for key in ("mean", "std"):
            value = self.get(inp, key, "input.")
            if not isinstance(value, list) or len(value) != 3:
                shown = f"{len(value)} values" if isinstance(value, list) else _kind(value)
                raise self.fail(f"input.{key}", f"must be a list of 3 numbers (R, G, B), not {shown}")
            norm[key] = tuple(self.number(v, f"input.{key}[{i}]") for i, v in enumerate(value))
        zero = [i for i, v in enumerate(norm["std"]) if v <= 0]
        if zero:
            raise self.fail(f"input.std[{zero[0]}]", f"is {norm['std'][zero[0]]}: a standard deviation must be > 0")
        names = self.get(d, "classes")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise self.fail("classes", "must be a non-empty list of class-name strings")
        objects = self.get(d, "class_objects")
        if not isinstance(objects, list) or len(objects) != len(names):
            shown = f"{len(objects)} entries" if isinstance(objects, list) else _kind(objects)
            raise self.fail("class_objects", f"must list one HICO object per class ({len(names)}), not {shown}")
        count = len(vocab.hico().objects)
        for i, obj in enumerate(objects):
            if isinstance(obj, bool) or not isinstance(obj, int) or not 0 <= obj < count:
                raise self.fail(
                    f"class_objects[{i}]", f"must be a HICO object index in 0..{count - 1}, not {obj!r} ({names[i]!r})"
                )
        return RuntimeMeta(image_size, patch_size, norm["mean"], norm["std"], list(names), list(objects))

    def graph(self, g: dict, meta: RuntimeMeta) -> GraphInfo:
        opset = self.integer(self.get(g, "opset", "graph."), "graph.opset")
        plugin = self.get(g, "plugin", "graph.")
        if not isinstance(plugin, bool):
            raise self.fail("graph.plugin", f"must be true or false, not {_kind(plugin)}")
        # Exports made before mask modes existed have the paper's hard mask.
        mask_mode = self.string(g.get("mask_mode", DEFAULT_MASK_MODE), "graph.mask_mode", MASK_MODES)
        if g.get("inputs") != graph_inputs(meta.image_size):
            raise self.fail("graph.inputs", f"must be {graph_inputs(meta.image_size)} for input.image_size")
        if set(g.get("outputs") or {}) != set(OUTPUT_NAMES):
            raise self.fail("graph.outputs", f"must name {list(OUTPUT_NAMES)}")
        return GraphInfo(opset, plugin, mask_mode)

    def digest(self, d: Any, name: str) -> Digest:
        if not isinstance(d, dict):
            raise self.fail(name, f"must be a JSON object, not {_kind(d)}")
        size = self.integer(self.get(d, "bytes", f"{name}."), f"{name}.bytes", minimum=0)
        digest = self.string(self.get(d, "sha256", f"{name}."), f"{name}.sha256")
        if not _SHA256.fullmatch(digest):
            raise self.fail(f"{name}.sha256", "must be 64 lowercase hex digits")
        return Digest(size, digest)

    def files(self, files: dict) -> dict[str, FileEntry]:
        if not files:
            raise self.fail("files", "lists no file")
        out = {}
        for name, entry in files.items():
            where = f"files[{name!r}]"
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise self.fail(where, "is not a file name in the export folder")
            digest = self.digest(entry, where)
            precision = self.string(self.get(entry, "precision", f"{where}."), f"{where}.precision", FILE_PRECISIONS)
            data = entry.get("external_data", {})
            if not isinstance(data, dict):
                raise self.fail(f"{where}.external_data", f"must be a JSON object, not {_kind(data)}")
            for n in data:
                if not n or "/" in n or "\\" in n or n in (".", ".."):
                    raise self.fail(f"{where}.external_data[{n!r}]", "is not a file name in the export folder")
            external = {n: self.digest(x, f"{where}.external_data[{n!r}]") for n, x in data.items()}
            out[name] = FileEntry(precision, digest, external)
        return out

    def engine(self, e: Any, image_size: int, files: dict[str, FileEntry]) -> EngineInfo:
        if not isinstance(e, dict):
            raise self.fail("engine", f"must be a JSON object or null, not {_kind(e)}")
        file = self.string(self.get(e, "file", "engine."), "engine.file")
        if file not in files:
            raise self.fail("engine.file", f"{file!r} is not listed in files")
        profile = self.get(e, "profile", "engine.")
        if not isinstance(profile, dict) or set(profile) != set(INPUT_NAMES):
            raise self.fail("engine.profile", f"must give (min, opt, max) shapes of {list(INPUT_NAMES)}")
        shapes = {}
        for name in INPUT_NAMES:
            value = profile[name]
            if not isinstance(value, list) or len(value) != 3 or not all(isinstance(s, list) and s for s in value):
                raise self.fail(f"engine.profile.{name}", "must be three shapes (min, opt, max)")
            shapes[name] = tuple(
                tuple(self.integer(x, f"engine.profile.{name}[{k}]") for x in s) for k, s in enumerate(value)
            )
        if shapes["images"][2][1:] != (3, image_size, image_size):
            raise self.fail("engine.profile.images", f"must be of [B, 3, {image_size}, {image_size}] images")
        plugin = e.get("plugin")
        if plugin is not None:
            self.string(plugin, "engine.plugin", ENGINE_PLUGINS)
        library = e.get("plugin_library")
        if library is not None:
            self.string(library, "engine.plugin_library")
        return EngineInfo(file, shapes, plugin, library)


def _kind(value: Any) -> str:
    """How a wrong value is shown in a message: its JSON type, and the value when it is short."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    kind = names.get(type(value), "a number")
    shown = repr(value)
    return f"{kind} {shown}" if len(shown) <= 24 and not isinstance(value, (dict, list)) else kind
