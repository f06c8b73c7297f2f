"""The error of a pretraining run that cannot start or cannot go on (see :mod:`brainscale.errors`)."""

from ..errors import TrainingError

__all__ = ["TrainingError"]
