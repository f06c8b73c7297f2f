"""Causal sequence modelling of learning-from-brains (:mod:`.spec` the config side, :mod:`.objective` the training;
the encoder is :class:`brainscale.objectives.sequence.model.CausalEncoder`)."""
