"""A Brainmarks model's features of the probe set, for our probes (``probe.checkpoints`` format ``brainmarks``).

Each probe run becomes the sample Brainmarks would give the model (see :mod:`.export`: ``bold``
(T, channels of the model's space), ``mean`` 0, ``std`` 1, ``tr``), goes through the model's
transform, and the model's ``cls_embeds`` (and the mean of its ``patch_embeds``, where it has
them) become the ``cls`` (and ``mean``) features, one row per run with its ``run_id``, as the
connectivity baseline's. Our probes then average a subject's rows as they average crops.

A transform with ``fit`` (label-free statistics, e.g. BrainHarmonix's robust scaling) is fitted on
the whole probe pool: the features are computed once for every split seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..probing.embeddings import FeatureTable, cached, embedding_device, embedding_key, probe_dataset
from . import BrainmarksError, brainmarks_version, require_brainmarks, run_bold, space_channels

__all__ = ["create_brainmarks_model", "brainmarks_features", "embed_brainmarks_model"]


def create_brainmarks_model(name: str, kwargs: dict | None = None):
    """Brainmarks' ``(transform, model)`` of a registered model name, frozen, in eval mode."""
    require_brainmarks()
    from brainmarks.models.registry import create_model, list_models

    if name not in list_models():
        raise BrainmarksError(f"Brainmarks has no model '{name}' (registered: {', '.join(list_models())}). Fix "
                              "probe.checkpoints.<name>.model, or install what the model's plugin imports.")
    transform, model = create_model(name, **(kwargs or {}))
    model.requires_grad_(False)
    return transform, model.eval()


def _sample(timeseries: np.ndarray, channels: np.ndarray, tr: float) -> dict:
    width = len(channels)
    return {"bold": torch.from_numpy(run_bold(timeseries, channels)), "mean": torch.zeros(1, width),
            "std": torch.ones(1, width), "tr": tr}


@torch.inference_mode()
def brainmarks_features(name: str, kwargs: dict | None, shard_folder: str | Path, splits_dir: str | Path, *,
                        repetition_time: float = 2.0, device: str = "cpu", log=None) -> FeatureTable:
    """One row per probe run: the model's ``cls`` (and ``mean`` of patch) embeddings.

    Parameters
    ----------
    name : str
        A registered Brainmarks model (e.g. ``connectome_schaefer400``, ``brainscale``).
    kwargs : dict, optional
        Its constructor's keywords (Brainmarks' ``model_kwargs``).
    shard_folder, splits_dir : str or Path
    repetition_time : float
        The shards' TR.
    """
    transform, model = create_brainmarks_model(name, kwargs)
    dataset = probe_dataset(shard_folder, splits_dir, crop_length=1, n_crops=1)
    channels = space_channels(model.__space__, len(dataset.missing[0]))
    model = model.to(device)
    samples = (_sample(dataset.read_run(run)[0], channels, repetition_time) for run in range(len(dataset.runs)))
    if transform is not None and hasattr(transform, "fit"):
        samples = list(samples)  # read once: the fit and the embeddings see the same samples
        transform.fit(samples)
    cls_rows, mean_rows, subjects = [], [], []
    for run, ((_, _, _, position), sample) in enumerate(zip(dataset.runs, samples)):
        if transform is not None:
            sample = transform(sample)
        batch = torch.utils.data.default_collate([sample])
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        cls_embeds, _, patch_embeds = model(batch)
        if cls_embeds is None and patch_embeds is None:
            raise BrainmarksError(f"Brainmarks model '{name}' returned neither cls_embeds nor patch_embeds.")
        pooled = patch_embeds.mean(dim=1) if patch_embeds is not None else None
        cls_rows.append((cls_embeds.mean(dim=1) if cls_embeds is not None else pooled).float().cpu().numpy()[0])
        if pooled is not None:
            mean_rows.append(pooled.float().cpu().numpy()[0])
        subjects.append(dataset.subject_ids[position])
        if log is not None and (run + 1) % 50 == 0:
            log(f"{name}: {run + 1}/{len(dataset.runs)} runs")
    features = {"cls": np.stack(cls_rows)[:, None, :]}
    if mean_rows:
        features["mean"] = np.stack(mean_rows)[:, None, :]
    return FeatureTable(np.asarray(subjects), features, {"run_id": np.arange(len(subjects), dtype=np.int64)},
                        attrs={"source": f"brainmarks:{name}", "space": model.__space__})


def _model_identity(name: str, kwargs: dict) -> str:
    """SHA-256 of what a Brainmarks model's features depend on: name, keywords, Brainmarks version, and the
    bytes of any file a keyword names (e.g. our encoder's ``path``)."""
    brainmarks = require_brainmarks()
    from ..shards.writer import sha256_of

    files = {key: sha256_of(value) for key, value in sorted(kwargs.items())
             if isinstance(value, str) and Path(value).is_file()}
    identity = {"model": name, "kwargs": kwargs, "files": files, "brainmarks": brainmarks_version(brainmarks)}
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def embed_brainmarks_model(checkpoint: dict, shard_folder: str | Path, splits_dir: str | Path, output: str | Path,
                           settings: dict, *, repetition_time: float = 2.0, name: str | None = None, log=None) -> bool:
    """Features of a ``probe.checkpoints`` entry of format ``brainmarks``, through the feature cache (rule embed)."""
    from ..shards.splits import probe_subjects
    from ..shards.writer import MANIFEST, sha256_of

    model, kwargs = checkpoint["model"], dict(checkpoint.get("model_kwargs") or {})
    manifest_sha = sha256_of(Path(shard_folder) / MANIFEST)
    key = embedding_key(_model_identity(model, kwargs), manifest_sha, probe_subjects(splits_dir),
                        {"reader": "brainmarks", "tr": repetition_time})

    def compute() -> FeatureTable:
        table = brainmarks_features(model, kwargs, shard_folder, splits_dir, repetition_time=repetition_time,
                                    device=embedding_device(settings["device"]), log=log)
        table.attrs.update({"manifest_sha256": manifest_sha, "source": name or f"brainmarks:{model}"})
        return table

    return cached(key, settings["cache_dir"], output, compute)
