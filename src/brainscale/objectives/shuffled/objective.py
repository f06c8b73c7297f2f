"""Shuffled autoregression: boldGPT's objective on (network, time-patch) tokens (model: :mod:`.model`).

Every sample's N*P tokens (9 networks x ``crop_length / patch_length`` patches) are visited in a
random order, drawn in the DataLoader workers from ``(seed, pass, item)``; a causal transformer
sees the tokens before step k and the *next-position query* of the token at step k, and predicts
that token. Targets (``target``):

- ``codes`` (boldGPT's default): the token's code under a k-means codebook of ``vocabulary``
  codes, with cross-entropy. There is one codebook per network (networks have different ROI
  counts, so a patch is R x L values, ROI-major). It is fitted with scikit-learn's
  ``MiniBatchKMeans`` (3 initialisations, seeded from the config seed and the network) on the
  patches of the **pretraining subset only**: every ``patch_length``-TR window (stride 1, as
  random crops may start anywhere) of the usable part of every run of the subset's subjects,
  at most ``codebook_patches`` of them drawn at random (seeded), leaving out the runs where the
  network is missing, with ``pretrain.threads`` BLAS threads. A codebook larger than a network's
  windows stops before training with the count. The fitted codebook is cached in ``codebook_cache`` (default
  ``<shard folder>/../cache/codebooks``, i.e. ``results/cache/codebooks``) as
  ``shuffled-<key>.npz``, the key a hash of the sorted subjects, the SHA-256 of the shards'
  manifest, the codebook settings and the seed; a resumed or repeated run reads it back. The
  codebook is only needed for training: the exported encoder and the random-init baseline do
  not fit or read it.
- ``continuous``: MSE between the head's output and the token's values (no codebook).

Tokens of a network whose channels are all missing are replaced by a learned mask embedding and
have no target.

Sizes (``PRESETS`` of :mod:`.spec`; all with 100-TR crops and 20-TR patches, 45 tokens, as Brain-Semantoks):
``tiny`` (width 64, depth 2, 2 heads: the demo, CPU), ``small`` (384, 12, 6 heads: boldGPT's
default ``boldgpt_small_patch10``) and ``base`` (768, 12, 12 heads: ``boldgpt_base_patch10``).
boldGPT's recipe: vocabulary 1024, AdamW (betas 0.9 / 0.95) with lr 3e-4 at batch 256, 2000
warm-up steps, cosine decay, weight decay 0.05, gradient clipping 1.0; here
``pretrain.options.shuffled: {vocabulary: 1024, base_lr: 3.0e-4}`` with ``weight_decay`` [0.05,
0.05] (the defaults; the loop's AdamW keeps PyTorch's betas). The defaults are the demo's:
vocabulary 64 and ``base_lr`` 0.032 (a learning rate of 1e-3 at the demo's batch of 8). Unlike
boldGPT there is no subject embedding (probing subjects are never seen in pretraining) and
positions are a network embedding plus a sin-cos patch embedding rather than a learned table.

Options (``pretrain.options.shuffled``, :mod:`.spec`): ``target`` (codes | continuous), ``vocabulary``,
``codebook_patches``, ``codebook_cache``, and the shared ``base_lr``, ``weight_decay``,
``momentum`` (unused: no EMA), ``grad_clip``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ...errors import TrainingError
from ...io import atomic_file
from ...shards.reader import ShardDataset
from ...shards.writer import MANIFEST, sha256_of
from ..base import CropItems, Objective, PretrainingData, item_generator
from .model import ShuffledEncoder, ShuffledTraining
from .spec import SPEC, ShuffledConfig

__all__ = ["PatchCodebook", "ShuffledAutoregression", "ShuffledCrops", "codebook_key"]

#: Bumped when the way codebooks are fitted changes (part of the cache key).
CODEBOOK_FORMAT = 1


class PatchCodebook:
    """One k-means codebook per network over its patches (R x L values, ROI-major).

    Parameters
    ----------
    vocabulary : int
        Codes per network.
    patch_length : int
        TRs per patch.
    max_patches : int
        Windows drawn at most (shared by the networks).
    seed : int

    Attributes
    ----------
    centroids_ : list of (vocabulary, R * L) float32 arrays, one per network
    n_patches_ : (N,) int array, the windows each network's codebook was fitted on
    """

    def __init__(self, *, vocabulary: int, patch_length: int, max_patches: int, seed: int):
        self.vocabulary, self.patch_length, self.max_patches, self.seed = vocabulary, patch_length, max_patches, seed
        self.centroids_: list[np.ndarray] | None = None
        self.n_patches_: np.ndarray | None = None

    # --- fitting ---------------------------------------------------------------------------------
    def _windows(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(run, start) of the windows to fit on: all of them, or ``max_patches`` drawn at random."""
        counts = np.maximum(lengths - self.patch_length + 1, 0)
        total = int(counts.sum())
        chosen = np.arange(total)
        if total > self.max_patches:
            rng = np.random.default_rng([self.seed, CODEBOOK_FORMAT])
            chosen = np.sort(rng.choice(total, size=self.max_patches, replace=False))
        ends = np.cumsum(counts)
        runs = np.searchsorted(ends, chosen, side="right")
        return runs, chosen - (ends - counts)[runs]

    def patch_counts(self, crops: ShardDataset, channels_of_network: list[list[int]]) -> np.ndarray:
        """(N,) windows each network would be fitted on (runs where it is missing left out)."""
        runs, _ = self._windows(np.array([length for _, _, length, _ in crops.runs]))
        present = np.stack([~crops.missing[:, channels].all(axis=1) for channels in channels_of_network], axis=1)
        return present[runs].sum(axis=0) if len(runs) else np.zeros(len(channels_of_network), dtype=int)

    def fit(self, crops: ShardDataset, channels_of_network: list[list[int]], *, threads: int = 1) -> "PatchCodebook":
        """Fit on the windows of every run of ``crops`` (the pretraining subset's ShardDataset),
        with ``threads`` BLAS / OpenMP threads (the training job's)."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=int(threads)):
            return self._fit(crops, channels_of_network)

    def _fit(self, crops: ShardDataset, channels_of_network: list[list[int]]) -> "PatchCodebook":
        from sklearn.cluster import MiniBatchKMeans

        runs, starts = self._windows(np.array([length for _, _, length, _ in crops.runs]))
        offsets = np.arange(self.patch_length)
        patches = [[] for _ in channels_of_network]
        for run in np.unique(runs):
            data, missing = crops.read_run(int(run))
            window = starts[runs == run][:, None] + offsets  # (S, L)
            for n, channels in enumerate(channels_of_network):
                if not missing[channels].all():
                    values = data[channels][:, window]  # (R, S, L)
                    patches[n].append(values.transpose(1, 0, 2).reshape(len(window), -1))
        centroids, counts = [], []
        for n, parts in enumerate(patches):
            values = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 1), np.float32)
            counts.append(len(values))
            if len(values) < self.vocabulary:
                raise ValueError(f"network {n} has {len(values)} patches, fewer than {self.vocabulary} codes")
            kmeans = MiniBatchKMeans(n_clusters=self.vocabulary, n_init=3, max_iter=100,
                                     batch_size=min(1024, len(values)),
                                     random_state=hash((int(self.seed), n)) % (2**32))
            centroids.append(kmeans.fit(values).cluster_centers_.astype(np.float32))
        self.centroids_, self.n_patches_ = centroids, np.asarray(counts)
        return self

    # --- use -------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, missing: torch.Tensor, channels_of_network: list[list[int]]) -> torch.Tensor:
        """(C, T) crop and (C,) missing mask -> (N, P) long codes of its patches; -1 for a missing network."""
        if not hasattr(self, "_torch"):  # centroids, squared norms and channels as tensors, once per process
            self._torch = [(torch.from_numpy(c), torch.from_numpy((c.astype(np.float64) ** 2).sum(1)).float(),
                            torch.as_tensor(channels, dtype=torch.long))
                           for c, channels in zip(self.centroids_, channels_of_network)]
        length = self.patch_length
        codes = []
        for centroids, norms, channels in self._torch:
            patches = x[channels].unfold(1, length, length).transpose(0, 1).flatten(1)  # (P, R * L)
            network = (norms[None, :] - 2 * patches @ centroids.T).argmin(dim=1)
            codes.append(network.masked_fill(missing[channels].all(), -1))
        return torch.stack(codes)

    def save(self, path: Path, key: str) -> None:
        with atomic_file(path) as temporary:
            np.savez(temporary, key=np.array(key), n_patches=self.n_patches_,
                     **{f"centroids_{n}": c for n, c in enumerate(self.centroids_)})

    def load(self, path: Path, key: str) -> bool:
        """Read a cached fit; False when the file is another codebook's."""
        with np.load(path) as stored:
            if str(stored["key"]) != key:
                return False
            self.n_patches_ = stored["n_patches"]
            self.centroids_ = [stored[f"centroids_{n}"] for n in range(len(self.n_patches_))]
        return True

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_torch", None)
        return state


def codebook_key(subjects, shard_folder: Path, *, vocabulary: int, patch_length: int, max_patches: int,
                 seed: int) -> str:
    """The cache key of a codebook: subset, shard contents, codebook settings and seed."""
    identity = {"subjects": sorted(str(s) for s in subjects), "manifest": sha256_of(Path(shard_folder) / MANIFEST),
                "vocabulary": int(vocabulary), "patch_length": int(patch_length), "max_patches": int(max_patches),
                "seed": int(seed), "format": CODEBOOK_FORMAT}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class ShuffledCrops(CropItems):
    """Items (x (C, T), missing (C,), order (M,) long[, codes (N, P) long]) keyed by ``(pass, item)``."""

    def __init__(self, crops: ShardDataset, config: ShuffledConfig, *, seed: int,
                 codebook: PatchCodebook | None = None):
        super().__init__(crops, seed=seed)
        self.codebook = codebook
        self.n_tokens, self.channels = config.n_tokens, config.channels_of_network()

    def order(self, epoch: int, item: int) -> torch.Tensor:
        """(M,) the token order of one item: a permutation of ``(seed, pass, item)``."""
        return torch.randperm(self.n_tokens, generator=item_generator(self.seed, epoch, item))

    def draw(self, x, missing, epoch: int, item: int) -> tuple:
        order = self.order(epoch, item)
        if self.codebook is None:
            return x, missing, order
        return x, missing, order, self.codebook.encode(x, missing, self.channels)


class ShuffledAutoregression(Objective):
    spec = SPEC
    config_class, encoder_class = ShuffledConfig, ShuffledEncoder

    def config(self) -> ShuffledConfig:
        return ShuffledConfig(**self.architecture, network_map=self.data.network_map)

    def build(self) -> ShuffledTraining:
        return ShuffledTraining(self.config(), target=self.options["target"], vocabulary=self.options["vocabulary"])

    def dataset(self) -> ShuffledCrops:
        config = self.config()
        crops = self.data.crops(config.crop_length, preload=self.settings["preload"])
        codebook = self.codebook(crops) if self.options["target"] == "codes" else None
        return ShuffledCrops(crops, config, seed=self.data.seed, codebook=codebook)

    def evaluation_dataset(self, subjects, seed: int) -> ShuffledCrops:
        """Crops of ``subjects`` under ``seed``, coded with the training subset's codebook (not one of their own)."""
        config = self.config()
        crops = PretrainingData(self.data.shard_folder, tuple(subjects), seed).crops(
            config.crop_length, preload=self.settings["preload"])
        codebook = self.codebook() if self.options["target"] == "codes" else None
        return ShuffledCrops(crops, config, seed=seed, codebook=codebook)

    # --- the codebook ----------------------------------------------------------------------------
    def _codebook_key(self) -> str:
        return codebook_key(self.data.subjects, self.data.shard_folder, vocabulary=self.options["vocabulary"],
                            patch_length=self.config().patch_length, max_patches=self.options["codebook_patches"],
                            seed=self.data.seed)

    def codebook_path(self) -> Path:
        """Where this subset's codebook is cached."""
        folder = self.options["codebook_cache"]
        folder = Path(folder) if folder else Path(self.data.shard_folder).resolve().parent / "cache" / "codebooks"
        return folder / f"shuffled-{self._codebook_key()[:20]}.npz"

    def codebook(self, crops: ShardDataset | None = None) -> PatchCodebook:
        """The subset's codebook: read from the cache, else fitted on ``crops`` (the subset) and cached.

        Raises
        ------
        TrainingError
            If a network has fewer training patches in the subset than the codebook has codes.
        """
        config, key, path = self.config(), self._codebook_key(), self.codebook_path()
        vocabulary, max_patches = self.options["vocabulary"], self.options["codebook_patches"]
        codebook = PatchCodebook(vocabulary=vocabulary, patch_length=config.patch_length, max_patches=max_patches,
                                 seed=self.data.seed)
        if path.is_file() and codebook.load(path, key):
            codebook.source_ = path
            return codebook
        crops = crops if crops is not None else self.data.crops(config.crop_length, preload=False)
        channels = config.channels_of_network()
        counts = codebook.patch_counts(crops, channels)
        if counts.min() < vocabulary:
            network, fewest = int(counts.argmin()), int(counts.min())
            raise TrainingError(f"pretrain.options.shuffled.vocabulary: a codebook of {vocabulary} codes is larger "
                                f"than the {fewest} training patches of network {network} in this pretraining subset "
                                f"of {len(self.data.subjects)} subjects (its {config.patch_length}-TR windows, at most "
                                f"codebook_patches = {max_patches}): lower pretrain.options.shuffled.vocabulary "
                                f"to at most {fewest}, or pretrain on more subjects.")
        codebook.fit(crops, channels, threads=self.settings.get("threads", 1))
        codebook.save(path, key)
        codebook.source_ = "fitted"
        return codebook
