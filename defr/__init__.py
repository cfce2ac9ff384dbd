"""DEFR: detection-free human-object interaction recognition (and detection by masking)."""

__version__ = "0.1.0"
