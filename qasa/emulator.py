"""Compatibility alias: the virtual QPU lives in :mod:`qasa.virtual` (kept for existing user code)."""
from qasa.virtual import PRESETS, STRUCTURES, Preset, VirtualQPU, device_field  # noqa: F401

__all__ = ["VirtualQPU", "Preset", "PRESETS", "STRUCTURES", "device_field"]
