"""The errors of ``defr-export``, in one module (every step raises these; the command maps them to exit codes).

- ``ExportError``: an export that cannot be done as asked (bad arguments, a checkpoint that is not a
  model, an output folder that cannot be written, TensorRT failing to parse or build); exit 2.
- ``CalibrationError``: int8 calibration data that cannot be used; exit 2.
- ``EngineNotBuiltError``: ``--engine`` without a usable TensorRT: the ONNX files and ``model.json``
  are written, the engine is not; exit 2.
- ``VerificationError``: a graph that is invalid or disagrees with PyTorch beyond tolerance;
  ``AccuracyGateError``: int8 losing more than ``--int8-max-drop``; nothing is written; exit 1.
"""

from __future__ import annotations

from defr.errors import DefrError


class ExportError(DefrError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


class CalibrationError(ExportError):
    """Calibration data that cannot be used: the message names the folder or file and what is wrong."""


class EngineNotBuiltError(ExportError):
    """The TensorRT engine was asked for but cannot be built here (TensorRT missing); the ONNX files are written."""


class VerificationError(ExportError):
    """An exported graph that is invalid or disagrees with PyTorch beyond tolerance."""


class AccuracyGateError(VerificationError):
    """The int8 graph loses more accuracy than ``--int8-max-drop`` allows."""
