"""Sequence-BERT of learning-from-brains (:mod:`.spec` the config side, :mod:`.objective` the training;
the encoder is :class:`brainscale.objectives.sequence.model.BidirectionalEncoder`)."""
