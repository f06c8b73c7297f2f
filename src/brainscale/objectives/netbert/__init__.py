"""Network-BERT of learning-from-brains (:mod:`.spec` the config side, :mod:`.objective` the training:
Seq-BERT's with masked channels)."""
