"""SimDINO-style coding-rate (MCR) loss between student and teacher projections.

For V views of a batch of m L2-normalised p-dimensional projections:

- compression: the mean, over ordered pairs of different views (teacher view i, student
  view j), of the batch-mean dot product ``mean_b <t_i[b], s_j[b]>``;
- expansion: for each view, the coding rate of ``Z = (s + t) / 2``:
  ``R(Z) = 1/2 logdet(I + p / (m N eps) Z^T Z)`` (Cholesky), averaged over views and scaled
  by ``(p + N m) / (p N m)`` (N the number of processes, m the per-process batch);
- loss = ``-coeff * compression - expansion``.

Under ``torch.distributed`` with ``world_size`` > 1, the batch means and the covariance are
summed over processes through a differentiable all-reduce, so every process computes the loss
of the whole global batch and data-parallel training takes the same step as one process on that
batch (the reference keeps per-process covariances instead).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["half_logdet", "coding_rate_loss", "global_sum"]


def global_sum(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """Sum over processes, differentiably; the identity for one process."""
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)
    return tensor


def half_logdet(matrix: torch.Tensor) -> torch.Tensor:
    """1/2 log det of symmetric positive-definite matrices (..., p, p), through Cholesky."""
    factor, _ = torch.linalg.cholesky_ex(matrix)
    return torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(dim=-1)


def coding_rate_loss(student: torch.Tensor, teacher: torch.Tensor, *, eps: float = 0.05, coeff: float = 1.0,
                     world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coding-rate loss of (V, m, p) student and teacher projections.

    Returns
    -------
    loss, compression, expansion : scalar tensors
    """
    if student.shape != teacher.shape or student.dim() != 3:
        raise ValueError(f"student and teacher must be (views, batch, dim) alike, received {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    views, batch, dim = student.shape
    student, teacher = student.float(), teacher.float()  # the log-determinant needs fp32
    similarity = global_sum(torch.einsum("ibp,jbp->ij", teacher, student), world_size) / (batch * world_size)
    # the mean over pairs of different views (a sum, not a boolean selection, which would sync the host)
    compression = (similarity.sum() - similarity.diagonal().sum()) / (views * (views - 1))
    z = (student + teacher) / 2
    covariance = global_sum(z.transpose(1, 2) @ z, world_size)  # (V, p, p) over the global batch
    identity = torch.eye(dim, device=student.device)
    scale = dim / (batch * world_size * eps)
    expansion = half_logdet(identity + scale * covariance).mean()
    expansion = expansion * (dim + world_size * batch) / (dim * world_size * batch)
    return -coeff * compression - expansion, compression, expansion
