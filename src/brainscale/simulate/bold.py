"""Voxel-wise BOLD from parcel signals, with the nuisance preprocessing must remove.

Intensity of voxel ``v`` at volume ``t`` (``B_v`` its baseline, signals in percent)::

    Y[t, v] = B_v * (1 + 0.01 * (a_v * parcel[t, p(v)]      # neural signal (parcel voxels only)
                                 + thermal[t, v]             # white noise
                                 + k_v * global[t]           # global signal
                                 + physio[t] @ L[:, v]       # physiological noise, strongest in CSF/WM
                                 + drift[t] @ D[:, v]        # slow scanner drift
                                 + motion[t] @ M[:, v]       # partial-volume effect of head position
                                 + spike[t] * s_v))          # spin-history dips at sudden movements
           * steady_state[t]                                 # bright non-steady-state volumes

Head motion is six rigid-body parameters (mm, rad): a slow random walk plus sudden
jerks; ``spike`` is the framewise displacement of each volume, so the artefacts line
up with the confounds fMRIPrep would report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .atlas import DemoAtlases
from .dynamics import bold_like_processes

__all__ = ["MotionTrace", "simulate_motion", "framewise_displacement", "VoxelModel", "build_voxel_model",
           "synthesise_bold"]

HEAD_RADIUS_MM = 50.0  # Power et al. convention for framewise displacement


@dataclass
class MotionTrace:
    """Rigid-body head motion of one run."""

    translations: np.ndarray  # (T, 3) mm
    rotations: np.ndarray  # (T, 3) rad


def framewise_displacement(motion: MotionTrace) -> np.ndarray:
    """(T,) Power framewise displacement in mm; the first volume is 0."""
    moved = np.abs(np.diff(motion.translations, axis=0)).sum(axis=1)
    turned = HEAD_RADIUS_MM * np.abs(np.diff(motion.rotations, axis=0)).sum(axis=1)
    return np.concatenate([[0.0], moved + turned])


def simulate_motion(rng: np.random.Generator, n_volumes: int, repetition_time: float,
                    high_motion: bool) -> MotionTrace:
    """Slow drift of head position plus sudden jerks (many more in a high-motion run)."""
    walk_mm = (0.04 if high_motion else 0.012) * np.sqrt(repetition_time)
    jerks_per_minute = 6.0 if high_motion else 0.15
    jerk_mm = 0.9 if high_motion else 0.5
    steps = rng.standard_normal((n_volumes, 6)) * walk_mm
    steps[:, 3:] /= HEAD_RADIUS_MM  # rotations in rad, same arc length at 50 mm
    n_jerks = rng.poisson(jerks_per_minute * n_volumes * repetition_time / 60.0)
    for onset in rng.integers(1, n_volumes, size=n_jerks):
        jump = rng.standard_normal(6) * jerk_mm / 2
        jump[3:] /= HEAD_RADIUS_MM
        steps[onset] += jump
        back = onset + int(rng.integers(1, 4))
        if back < n_volumes and rng.random() < 0.7:  # the head mostly comes back
            steps[back] -= jump * rng.uniform(0.6, 1.0)
    steps[0] = 0.0
    position = np.cumsum(steps, axis=0)
    return MotionTrace(translations=position[:, :3], rotations=position[:, 3:])


@dataclass
class VoxelModel:
    """Spatial maps of one run's voxels (in-mask voxels, in mask order)."""

    baseline: np.ndarray  # (V,)
    parcel: np.ndarray  # (V,) parcel column, -1 for voxels outside parcels
    signal_gain: np.ndarray  # (V,)
    global_gain: np.ndarray  # (V,)
    physio_loadings: np.ndarray  # (n_physio, V)
    drift_loadings: np.ndarray  # (3, V)
    motion_loadings: np.ndarray  # (6, V)
    spike_gain: np.ndarray  # (V,)


_TISSUE_BASELINE = {DemoAtlases.TISSUE_GM: 700.0, DemoAtlases.TISSUE_WM: 560.0,
                    DemoAtlases.TISSUE_CSF: 950.0, DemoAtlases.TISSUE_OTHER: 620.0}
_TISSUE_GLOBAL = {DemoAtlases.TISSUE_GM: 1.0, DemoAtlases.TISSUE_WM: 0.6,
                  DemoAtlases.TISSUE_CSF: 0.8, DemoAtlases.TISSUE_OTHER: 0.7}
_TISSUE_PHYSIO = {DemoAtlases.TISSUE_GM: 0.3, DemoAtlases.TISSUE_WM: 0.8,
                  DemoAtlases.TISSUE_CSF: 1.6, DemoAtlases.TISSUE_OTHER: 0.6}
N_PHYSIO = 3


def build_voxel_model(rng: np.random.Generator, atlases: DemoAtlases) -> VoxelModel:
    """Draw the spatial maps of one run."""
    inside = atlases.brain_mask
    tissue = atlases.tissue[inside]
    parcel = atlases.parcel_index()[inside] - 1
    ijk = np.argwhere(inside)
    centre = ijk.mean(axis=0)
    radius = np.linalg.norm((ijk - centre) / (ijk.max(axis=0) - ijk.min(axis=0) + 1), axis=1)
    edge = np.clip(radius / radius.max(), 0, 1) ** 2  # motion artefacts are strongest at the brain's edge
    n_voxels = len(tissue)

    def per_tissue(table):
        return np.vectorize(table.get)(tissue).astype(np.float64)

    bias_field = 1 + 0.08 * ((ijk - centre) / (ijk.max(axis=0) + 1)) @ rng.standard_normal(3)
    drift_common = rng.standard_normal(3)[:, None]
    return VoxelModel(
        baseline=per_tissue(_TISSUE_BASELINE) * bias_field * rng.uniform(0.97, 1.03, n_voxels),
        parcel=parcel,
        signal_gain=np.where(parcel >= 0, rng.uniform(0.7, 1.3, n_voxels), 0.0),
        global_gain=per_tissue(_TISSUE_GLOBAL) * rng.uniform(0.8, 1.2, n_voxels),
        physio_loadings=per_tissue(_TISSUE_PHYSIO) * rng.standard_normal((N_PHYSIO, n_voxels)),
        drift_loadings=drift_common * np.array([[1.0], [0.6], [0.3]]) + 0.4 * rng.standard_normal((3, n_voxels)),
        motion_loadings=(0.2 + 1.5 * edge) * rng.standard_normal((6, n_voxels)),
        spike_gain=-(1.0 + 3.0 * edge) * rng.uniform(0.5, 1.5, n_voxels),
    )


def synthesise_bold(rng: np.random.Generator, model: VoxelModel, parcels: np.ndarray, motion: MotionTrace,
                    repetition_time: float, dummy_scans: int, thermal_sd: float = 1.6) -> np.ndarray:
    """(T, V) float32 voxel intensities; see the module docstring for the model."""
    n_volumes = parcels.shape[0]
    time = np.linspace(-1.0, 1.0, n_volumes)
    drift = np.stack([time, time**2 - 1 / 3, time**3], axis=1)
    global_signal = 0.8 * bold_like_processes(rng, n_volumes, repetition_time, 1)[:, 0]
    physio = bold_like_processes(rng, n_volumes, repetition_time, N_PHYSIO, time_constant_s=4.0)
    position = np.concatenate([motion.translations, motion.rotations * HEAD_RADIUS_MM], axis=1)
    position = position - position.mean(axis=0)
    fd = framewise_displacement(motion)
    spike = fd + 0.4 * np.concatenate([[0.0], fd[:-1]])  # the dip outlasts the jerk by a volume
    spike = np.where(fd > 0.2, spike, 0.0)

    percent = thermal_sd * rng.standard_normal((n_volumes, len(model.baseline)), dtype=np.float32)
    # float32 throughout: the (T, V) terms are the simulator's largest arrays. Voxels outside the
    # parcels (parcel -1) read the appended zero column (their gain is 0 too): one gather, no masked scatter.
    padded = np.concatenate([parcels, np.zeros((n_volumes, 1))], axis=1).astype(np.float32)
    percent += padded[:, model.parcel] * model.signal_gain.astype(np.float32)
    nuisance = np.concatenate([global_signal[:, None], physio, drift, position, spike[:, None]], axis=1)
    loadings = np.concatenate([model.global_gain[None, :], model.physio_loadings, model.drift_loadings,
                               model.motion_loadings, model.spike_gain[None, :]], axis=0)
    percent += nuisance.astype(np.float32) @ loadings.astype(np.float32)
    steady_state = 1 + 0.6 * np.exp(-np.arange(n_volumes) / 1.2) * (np.arange(n_volumes) < dummy_scans)
    intensity = (1 + 0.01 * percent) * model.baseline.astype(np.float32)
    intensity *= steady_state[:, None].astype(np.float32)
    return intensity
