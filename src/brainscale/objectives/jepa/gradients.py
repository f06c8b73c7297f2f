"""Brain-gradient positions of Brain-JEPA from the pretraining subset's own group connectivity.

The reference computes functional gradients of a population FC matrix with BrainSpace
(diffusion-map embedding) and min-max scales them to [-1, 1]; here, in numpy/scipy:

1. :func:`group_connectivity`: the mean over the subset's runs of each run's Pearson correlation
   of the channels (a pair averages over the runs where both channels are present; a channel
   missing everywhere keeps a zero row);
2. :func:`normalized_angle_affinity`: BrainSpace's ``compute_affinity`` defaults: each row keeps
   its top 10% of values (``sparsity`` 0.9, the rest zeroed), then the normalised angle
   ``1 - arccos(cosine similarity) / pi`` between rows, negatives zeroed;
3. :func:`diffusion_embedding`: diffusion maps with ``alpha`` 0.5 (Coifman & Lafon):
   ``W_a = D^-a W D^-a``, the Markov matrix ``P = D_a^-1 W_a``, its leading non-trivial right
   eigenvectors scaled by ``lambda / (1 - lambda)`` (the multi-scale map, BrainSpace's
   ``diffusion_time`` 0) and signed so that each one's largest-magnitude entry is positive.
   BrainSpace hands P itself to a symmetric solver; here the eigenvectors come from the
   symmetric conjugate ``S = D_a^-1/2 W_a D_a^-1/2`` (same eigenvalues, ``psi = D_a^-1/2 u``),
   which is exact;
4. :func:`minmax_scale`: each component to [-1, 1].

:func:`subset_gradients` runs the four steps on the shards' runs of a pretraining subset.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["run_correlation", "group_connectivity", "normalized_angle_affinity", "diffusion_embedding",
           "minmax_scale", "brain_gradients", "subset_gradients"]


def run_correlation(x: np.ndarray, missing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of one run's channels.

    Parameters
    ----------
    x : (C, T) array
    missing : (C,) bool array, optional
        Channels the run lacks.

    Returns
    -------
    correlation : (C, C) array, 0 where a channel is missing, constant or not finite
    present : (C,) bool array, the channels that entered the correlation
    """
    x = np.asarray(x, dtype=np.float64)
    present = np.isfinite(x).all(axis=1)
    if missing is not None:
        present &= ~np.asarray(missing, dtype=bool)
    centred = np.where(present[:, None], x, 0.0)
    centred = centred - centred.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred ** 2).sum(axis=1))
    present &= norm > 1e-12 * max(float(norm.max(initial=0.0)), 1.0)
    z = np.where(present[:, None], centred / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
    return np.clip(z @ z.T, -1.0, 1.0), present


def group_connectivity(runs) -> np.ndarray:
    """(C, C) mean correlation over ``runs``, an iterable of ``(x (C, T), missing (C,))``.

    Each pair averages over the runs where both channels are present; the diagonal is 1 for a
    channel present in some run and the row of a channel present in none is zero.
    """
    total = count = None
    for x, missing in runs:
        if x.shape[1] < 3:  # too short to correlate
            continue
        correlation, present = run_correlation(x, missing)
        both = np.outer(present, present)
        if total is None:
            total, count = np.zeros_like(correlation), np.zeros(correlation.shape, dtype=np.int64)
        total += np.where(both, correlation, 0.0)
        count += both
    if total is None:
        raise ValueError("no run of at least 3 time points to compute a group connectivity from")
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def normalized_angle_affinity(connectivity: np.ndarray, *, sparsity: float = 0.9) -> np.ndarray:
    """(C, C) affinity: rows sparsified to their top ``1 - sparsity``, then the normalised angle kernel."""
    rows = np.array(connectivity, dtype=np.float64)
    n = rows.shape[1]
    keep = max(int(n * (1 - sparsity)), 1)
    if keep < n:
        top = np.argpartition(rows, n - keep, axis=1)[:, n - keep:]
        sparse = np.zeros_like(rows)
        np.put_along_axis(sparse, top, np.take_along_axis(rows, top, axis=1), axis=1)
        rows = sparse
    norm = np.linalg.norm(rows, axis=1)
    unit = rows / np.where(norm > 0, norm, 1.0)[:, None]
    cosine = np.clip(unit @ unit.T, -1.0, 1.0)
    affinity = 1.0 - np.arccos(cosine) / np.pi
    return np.maximum(affinity, 0.0)


def diffusion_embedding(affinity: np.ndarray, n_components: int = 30, *,
                        alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map embedding of a symmetric non-negative affinity (see the module docstring).

    Returns
    -------
    embedding : (C, n) array, n = min(n_components, C - 1)
        The leading non-trivial right eigenvectors of the Markov matrix, normalised so that the
        trivial one is all ones, times ``lambda / (1 - lambda)``, largest-magnitude entry positive.
    eigenvalues : (n,) array, descending
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    size = affinity.shape[0]
    if affinity.shape != (size, size) or not np.allclose(affinity, affinity.T, atol=1e-10):
        raise ValueError(f"the affinity must be a symmetric square matrix, received shape {affinity.shape}")
    degree = affinity.sum(axis=1)
    if (degree <= 0).any():
        raise ValueError(f"{int((degree <= 0).sum())} rows of the affinity are zero: the diffusion is undefined")
    scale = degree ** -alpha
    weights = affinity * scale[:, None] * scale[None, :]  # W_a = D^-a W D^-a
    root = np.sqrt(weights.sum(axis=1))
    symmetric = weights / root[:, None] / root[None, :]  # S = D_a^-1/2 W_a D_a^-1/2
    n = min(int(n_components), size - 1)
    eigenvalues, vectors = scipy.linalg.eigh(symmetric, subset_by_index=[size - n - 1, size - 1])
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]  # descending, the trivial one first
    psi = vectors / root[:, None]  # right eigenvectors of P = D_a^-1 W_a
    psi = psi / psi[:, [0]]
    eigenvalues = eigenvalues / eigenvalues[0]
    eigenvalues, psi = eigenvalues[1:], psi[:, 1:]
    embedding = psi * (eigenvalues / np.maximum(1 - eigenvalues, 1e-12))[None, :]
    embedding *= np.sign(embedding[np.abs(embedding).argmax(axis=0), np.arange(n)])[None, :]
    return embedding, eigenvalues


def minmax_scale(components: np.ndarray) -> np.ndarray:
    """Each column to [-1, 1] (a constant column to 0)."""
    low, high = components.min(axis=0), components.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (components - low) / span * 2 - 1, 0.0)


def brain_gradients(connectivity: np.ndarray, n_components: int = 30, *, sparsity: float = 0.9,
                    alpha: float = 0.5) -> np.ndarray:
    """(C, n) min-max scaled diffusion-map gradients of a connectivity matrix."""
    affinity = normalized_angle_affinity(connectivity, sparsity=sparsity)
    embedding, _ = diffusion_embedding(affinity, n_components, alpha=alpha)
    return minmax_scale(embedding)


def subset_gradients(data, n_components: int = 30) -> np.ndarray:
    """(C, n) float32 gradients of the group connectivity of a pretraining subset's runs.

    Parameters
    ----------
    data : :class:`~brainscale.objectives.base.PretrainingData`
        Its ``subjects`` (every subject of the shards when empty).
    n_components : int
        At most C - 1 are returned.
    """
    from ...shards.reader import ShardDataset, shard_paths

    # The training dataset verifies the shards' checksums; this is a second read of the same files.
    if data.subjects:
        dataset = data.crops(2, preload=False, verify=False)
    else:
        dataset = ShardDataset(shard_paths(data.shard_folder), None, crop_length=2, preload=False, verify=False)
    connectivity = group_connectivity(dataset.read_run(run) for run in range(len(dataset.runs)))
    return brain_gradients(connectivity, n_components).astype(np.float32)
