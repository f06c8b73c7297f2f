"""The errors of brainscale, one hierarchy: every error the package raises on purpose is a
:class:`BrainscaleError`, and its message names the file or key, the problem and the fix.

This module imports nothing heavy: the config checks and every stage can raise these without
importing torch.
"""

from __future__ import annotations

__all__ = ["BrainscaleError", "ConfigError", "InputError", "ArchitectureError", "TrainingError", "ExportError"]


class BrainscaleError(Exception):
    """Anything brainscale refuses to do; the message says why and what to do."""


class ConfigError(BrainscaleError, ValueError):
    """A configuration value is missing, mistyped or impossible."""


class InputError(BrainscaleError, ValueError):
    """An input file is missing, unreadable or inconsistent."""


class ArchitectureError(ConfigError):
    """A model architecture that cannot work (the message names the setting)."""


class TrainingError(BrainscaleError, RuntimeError):
    """Training cannot start or cannot go on."""


class ExportError(TrainingError):
    """An ``encoder.pt`` export that cannot be read or does not fit its architecture."""
