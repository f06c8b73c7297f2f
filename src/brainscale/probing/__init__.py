"""Frozen-encoder embeddings, baselines, linear probes and scaling tables."""
