"""Pretraining: schedules, the EMA teacher, the training loop and checkpoints."""
