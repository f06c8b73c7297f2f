"""The torch side of an objective: what it provides to the training loop, the exports and the probes.

An objective's package (see :mod:`brainscale.objectives`) has a torch-free ``spec.py`` (presets,
options, checks) and a subclass of :class:`Objective` that provides:

- :meth:`Objective.build`: a :class:`TrainingModel` whose ``forward(*tensors, **options)`` returns a
  dict of scalar losses with ``total`` (and any of the spec's ``loss_terms``), with
  ``trainable_modules()``, ``ema_pairs()`` (``[(target, online), ...]``, empty without EMA) and
  ``encoder``, the module that is exported and probed;
- :meth:`Objective.dataset`: a dataset whose keys are ``(pass, item)`` pairs and whose items are
  tuples of tensors with the sample first, drawn in the DataLoader workers from
  ``(seed, pass, item)`` (crops, views, masks);
- :meth:`Objective.prepare`: the step's batch on the device and the forward options (per-step
  draws and schedules); tensors stay sample-major so that the loop can cut them into
  accumulation slices and data-parallel shares;
- :meth:`Objective.evaluation_dataset`: the same items for other subjects under another seed (the
  held-out loss);
- ``config_class`` and ``encoder_class``: the encoder of an export's config, for loading.

An encoder has ``config`` (a dataclass with ``to_dict()``, ``crop_length``, ``depth``, ``width``
and ``network_map``), ``has_cls`` and ``layer_outputs(x, missing_channels=None)``, the tokens
(B, tokens, D) of every layer through the final LayerNorm, CLS first where ``has_cls``:
:func:`token_features` turns them into the probes' ``cls`` and ``mean`` features.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .spec import ObjectiveSpec, RunSpec

__all__ = ["Objective", "TrainingModel", "PretrainingData", "Step", "CropItems", "token_features", "item_generator",
           "network_map_of"]


@dataclass(frozen=True)
class PretrainingData:
    """What an objective may know of its data before training: the shards and the subset."""

    shard_folder: Path
    subjects: tuple
    seed: int

    def __post_init__(self):
        # callers pass strings and arrays; objectives rely on a Path and a tuple of str
        object.__setattr__(self, "shard_folder", Path(self.shard_folder))
        object.__setattr__(self, "subjects", tuple(str(s) for s in self.subjects))

    @cached_property
    def mapping(self) -> dict:
        """The arrays of the shards' ``network_mapping.npz``."""
        with np.load(Path(self.shard_folder) / "network_mapping.npz") as mapping:
            return {key: mapping[key] for key in mapping.files}

    @cached_property
    def network_map(self) -> list[int]:
        """(channels,) network of each channel: 0-6 cortical (7-network order), 7 subcortex, 8 cerebellum."""
        cortical = self.mapping["network_map_schaefer400_7n"]
        offset = int(cortical.max()) + 1
        return [int(v) for v in cortical] + [offset + int(v) for v in self.mapping["network_map_tian3"]] + \
            [offset + 1 + int(v) for v in self.mapping["network_map_buckner7"]]

    def crops(self, crop_length: int, *, preload: bool = True, **options):
        """A :class:`~brainscale.shards.reader.ShardDataset` of the subset's random crops."""
        from ..shards.reader import ShardDataset, shard_paths

        return ShardDataset(shard_paths(self.shard_folder), list(self.subjects), crop_length=crop_length,
                            seed=self.seed, preload=preload, **options)


def network_map_of(shard_folder: str | Path) -> list[int]:
    """The model's (channels,) network map from the shards' ``network_mapping.npz``: 0-6, 7, 8."""
    return PretrainingData(Path(shard_folder), (), 0).network_map


@dataclass(frozen=True)
class Step:
    """Where training stands when a batch is prepared."""

    step: int
    budget: object  # a brainscale.training.budget.TrainingBudget
    device: torch.device
    positions: list  # this process's positions in the global batch
    global_batch: int
    seed: int
    world_size: int = 1


class TrainingModel(nn.Module):
    """Base of the training models an objective builds: ``forward(*tensors, **options)`` returns a dict
    of scalar losses with ``total``; ``encoder`` is the module that is exported and probed.

    By default every parameter trains and nothing follows an EMA; an objective with a teacher or
    target encoder overrides :meth:`trainable_modules` and :meth:`ema_pairs`.
    """

    encoder: nn.Module

    def trainable_modules(self) -> nn.Module:
        """The modules the optimizer updates."""
        return self

    def ema_pairs(self) -> list:
        """``[(target, online), ...]``: modules that follow an EMA of others (empty without EMA)."""
        return []


class Objective(abc.ABC):
    """A pretraining objective (see the module docstring): the torch side of an :class:`ObjectiveSpec`.

    A subclass sets ``spec`` (its package's ``SPEC``), ``config_class`` and ``encoder_class``; the
    run's settings are a :class:`RunSpec`: ``self.architecture``, ``self.options`` and
    ``self.settings`` (the training keys).
    """

    spec: ClassVar[ObjectiveSpec]
    config_class: ClassVar[type]
    encoder_class: ClassVar[type]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "spec" in vars(cls):
            cls.name, cls.presets, cls.loss_terms = cls.spec.name, cls.spec.presets, tuple(cls.spec.loss_terms)

    def __init__(self, run: RunSpec, data: PretrainingData):
        self.run, self.data = run, data
        self.architecture, self.options, self.settings = dict(run.architecture), run.options, run.training

    # --- what the loop calls ---------------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> TrainingModel:
        """The training model (initialised from the current torch seed)."""

    @abc.abstractmethod
    def dataset(self) -> torch.utils.data.Dataset:
        """Training items keyed by ``(pass, item)``."""

    @classmethod
    def encoder_from_config(cls, config: dict) -> nn.Module:
        """An encoder of the architecture an export records (weights loaded afterwards)."""
        return cls.encoder_class(cls.config_class(**config))

    def prepare(self, batch, step: Step) -> tuple[tuple, dict]:
        """The batch on the device, and the forward options of this step."""
        return tuple(tensor.to(step.device, non_blocking=True) for tensor in batch), {}

    def monitor_features(self, model: nn.Module, tensors: tuple) -> torch.Tensor:
        """(n, D) features of the exported encoder for the collapse monitors: CLS, else the token mean."""
        with torch.no_grad():
            tokens = model.encoder(tensors[0], missing_channels=tensors[1])
        return token_features(model.encoder, tokens)[0]

    def evaluation_dataset(self, subjects, seed: int) -> torch.utils.data.Dataset:
        """Items of ``subjects`` drawn as in training but from ``seed`` (the held-out loss, see
        :mod:`brainscale.training.evaluation`): this objective's dataset built on those subjects. An
        objective whose items depend on its training subset (a codebook fitted on it) overrides this."""
        other = copy.copy(self)
        other.data = PretrainingData(self.data.shard_folder, tuple(subjects), seed)
        return other.dataset()

    def random_encoder(self, seed: int) -> nn.Module:
        """The exported encoder of a freshly built model of ``seed`` (the random-init baseline)."""
        torch.manual_seed(seed)
        return self.build().encoder.eval()


def item_generator(seed: int, epoch: int, item: int) -> torch.Generator:
    """The generator of one training item's draws (masks, orders, pairs): a function of ``(seed, pass, item)``."""
    return torch.Generator().manual_seed(hash((int(seed), int(epoch), int(item))) % (2**62))


class CropItems(torch.utils.data.Dataset):
    """Items of the crops of a ``ShardDataset``, keyed by ``(pass, item)`` (or an item of the current
    pass, see ``set_epoch``): ``(x, missing (C,))``, x (C, T) for one view, (V, C, T) for several, plus
    what :meth:`draw` adds, from the item's generator (:func:`item_generator`) for one view."""

    def __init__(self, crops, *, seed: int):
        self.crops, self.seed = crops, seed

    def set_epoch(self, epoch: int) -> None:
        self.crops.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, key):
        epoch, item = key if isinstance(key, tuple) else (self.crops.epoch, key)
        x, missing, _ = self.crops[(epoch, item)]
        return self.draw(x, missing, int(epoch), int(item))

    def draw(self, x: torch.Tensor, missing: torch.Tensor, epoch: int, item: int) -> tuple:
        """The item: the crop and its missing channels, and the objective's draws of ``(seed, epoch, item)``."""
        return x, missing


def token_features(encoder: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cls, mean) of (B, tokens, D): CLS and the mean of the other tokens, or the mean twice
    for an encoder without CLS."""
    if getattr(encoder, "has_cls", True):
        return tokens[:, 0], tokens[:, 1:].mean(dim=1)
    mean = tokens.mean(dim=1)
    return mean, mean
