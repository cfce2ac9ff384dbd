"""How an export's files were made: the sidecar's records for people (nothing branches on them).

``SourceInfo`` (the checkpoint), ``ExporterInfo`` (package versions) and ``Int8Info`` (how the int8
file was quantized, calibrated and gated). ``defr.runtime.sidecar`` reads and writes them as parts of
``model.json``; they live here so the sidecar module holds the schema and its checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from defr.choices import Quantizer


@dataclass(frozen=True)
class SourceInfo:
    """Where the exported weights came from: the checkpoint's file name and SHA-256, its backbone and
    its head's initialisation (None: not recorded)."""

    checkpoint: str | None = None
    sha256: str | None = None
    backbone: str | None = None
    init: dict | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class ExporterInfo:
    """The versions of the packages the export ran with (package → version, None: not installed)."""

    versions: tuple[tuple[str, str | None], ...] = ()

    def to_dict(self) -> dict:
        return dict(self.versions)


@dataclass(frozen=True)
class Int8Info:
    """How the int8 file was made. quantizer: whose; settings: that quantizer's own settings and report
    (ONNX Runtime's: method, node groups, formats; NNCF's: model type, SmoothQuant, accuracy control's
    log), kept as the quantizer wrote them because they differ by quantizer; calibration / held_out: the
    image sets (``CalibrationSet.describe``; calibration None: dynamic quantization); gate: the accuracy
    gate's result (None: not run, ``--no-verify``).

    In ``model.json`` the record is one flat object (the settings beside the named keys), as format 3
    has always written it."""

    quantizer: Quantizer
    settings: dict
    calibration: dict | None = None
    held_out: dict | None = None
    gate: dict | None = None

    NAMED = ("quantizer", "calibration", "held_out", "gate")  # the keys that are not settings

    def to_dict(self) -> dict:
        return {
            "quantizer": self.quantizer,
            **self.settings,
            "calibration": self.calibration,
            "held_out": self.held_out,
            "gate": self.gate,
        }
