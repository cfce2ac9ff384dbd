"""The errors of ``defr-export``, in one module (every step raises these; the command maps them to exit codes).

- ``ExportError``: an export that cannot be done as asked (bad arguments, a checkpoint that is not a
  model, an output folder that cannot be written, TensorRT failing to parse or build; ``--engine``
  without a usable TensorRT, after the ONNX files and ``model.json`` are written); exit 2.
- ``CalibrationError``: int8 calibration data that cannot be used; exit 2.
- ``VerificationError``: a graph that is invalid or disagrees with PyTorch beyond tolerance, or
  int8 losing more than ``--int8-max-drop`` (the accuracy gate); nothing is written; exit 1.
"""

from __future__ import annotations

from defr.errors import DefrError


class ExportError(DefrError, ValueError):
    """An export that cannot be done as asked; the message says what to change."""


class CalibrationError(ExportError):
    """Calibration data that cannot be used: the message names the folder or file and what is wrong. Its own
    class because ``defr.export.calibration`` prefixes a dataset reader's error with "calibration data" once."""


class VerificationError(ExportError):
    """An exported graph that is invalid or disagrees with PyTorch beyond tolerance."""
