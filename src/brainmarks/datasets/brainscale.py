"""A brainscale probe-set export as Brainmarks datasets (a plugin in Brainmarks' namespace package).

``brainscale_<target>`` for every target map of the export at ``$BRAINSCALE_ROOT`` (default
``./results/brainmarks``, written by ``snakemake brainmarks_export``), and ``brainscale`` with the
target as ``dataset_kwargs.target``. The logic is :mod:`brainscale.brainmarks.export`.
"""

import functools

from brainmarks.datasets.registry import register_dataset

from brainscale.brainmarks.export import dataset_root, exported_targets, load_export


@register_dataset
def brainscale(space: str, target: str | None = None, **kwargs):
    return load_export(dataset_root(), target, space, **kwargs)


for _target in exported_targets(dataset_root()):
    register_dataset(f"brainscale_{_target}")(functools.partial(load_export, dataset_root(), _target))
