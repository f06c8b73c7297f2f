"""Brain-JEPA (:mod:`.spec` the config side, :mod:`.masking` the masks' ranges, :mod:`.model` the encoder
and predictor, :mod:`.gradients` the brain-gradient positions, :mod:`.objective` the training)."""
