"""The BrainLM-style masked autoencoder (:mod:`.spec` the config side, :mod:`.model` the encoder, decoder
and loss, :mod:`.objective` the training)."""
