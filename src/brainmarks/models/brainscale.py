"""brainscale encoders as Brainmarks models (a plugin in Brainmarks' namespace package).

- ``brainscale``: any ``encoder.pt``, from ``model_kwargs.path`` or ``$BRAINSCALE_ENCODER``;
- ``brainscale_<model>_n-<size>_seed-<seed>`` (and ``brainscale_random_<model>_seed-<seed>``): every
  run found under ``$BRAINSCALE_RESULTS`` (default ``./results``) when Brainmarks starts.

The logic is :mod:`brainscale.brainmarks.model`.
"""

import functools
import os

from brainmarks.models.registry import register_model

from brainscale.brainmarks.model import RESULTS_VARIABLE, brainmarks_encoder, find_encoders

register_model("brainscale")(brainmarks_encoder)

for _name, _path in find_encoders(os.environ.get(RESULTS_VARIABLE, "results")).items():
    register_model(_name)(functools.partial(brainmarks_encoder, str(_path)))
