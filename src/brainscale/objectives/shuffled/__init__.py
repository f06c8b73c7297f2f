"""Shuffled autoregression, boldGPT's objective (:mod:`.spec` the config side, :mod:`.model` the causal
encoder and its heads, :mod:`.objective` the codebook and the training)."""
