"""What the token-per-TR objectives of learning-from-brains share (``csm``, ``seqbert``, ``netbert``,
``autoencoder``): the configs, presets and config-time checks (:mod:`.config`, torch-free), the
encoders (:mod:`.model`) and the shared training side (:mod:`.objective`). Not an objective itself
(no ``spec.py``): each member package has its own spec.
"""
