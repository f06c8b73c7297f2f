"""The error of a pretraining run that cannot start or cannot go on."""

__all__ = ["TrainingError"]


class TrainingError(RuntimeError):
    """Training cannot start or cannot go on (the message says why and what to do)."""
