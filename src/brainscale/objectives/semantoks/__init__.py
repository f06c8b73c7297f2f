"""Brain-Semantoks (:mod:`.spec` the config side, :mod:`.model` the encoder, :mod:`.objective` the training)."""
