"""Figures of the workflow (matplotlib, no display needed)."""
