"""Pretraining: the run's setup, the training loop, its log and checkpoints, budgets, schedules, launch."""
