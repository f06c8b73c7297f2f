"""An fMRIPrep-style confounds table computed from the simulated images.

Columns follow the names and conventions of current fMRIPrep (21 and later): tissue
means (``global_signal``, ``csf``, ``white_matter``) with ``_derivative1``, ``_power2``
and ``_derivative1_power2`` expansions (derivatives have an undefined first row), the
means of the combined CSF+WM mask and of the tCompCor mask (``csf_wm``, ``tcompcor``),
``dvars``/``std_dvars``, ``framewise_displacement`` and ``rmsd``, CompCor components
described in the JSON sidecar (``t_comp_cor_XX`` temporal; ``a_comp_cor_XX``,
``c_comp_cor_XX``, ``w_comp_cor_XX`` anatomical in the combined, CSF and WM masks), the
discrete cosine high-pass basis (128 s, ``cosineXX``), one-hot
``non_steady_state_outlierXX`` and ``motion_outlierXX`` columns (no underscore before
the number, as fMRIPrep writes them), and the six motion parameters with expansions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg

from .bold import MotionTrace, framewise_displacement

__all__ = ["cosine_basis", "expansions", "standardised_dvars", "compcor", "confounds_table"]

HIGH_PASS_PERIOD_S = 128.0
FD_THRESHOLD_MM = 0.5
STD_DVARS_THRESHOLD = 1.5
_RMSD_RADIUS_MM = 80.0


def cosine_basis(n_volumes: int, repetition_time: float, period_s: float = HIGH_PASS_PERIOD_S) -> np.ndarray:
    """(T, K) discrete cosine regressors below ``1 / period_s`` Hz, without the constant."""
    order = int(np.floor(2 * n_volumes * repetition_time / period_s))
    times = np.arange(n_volumes)
    columns = [np.sqrt(2.0 / n_volumes) * np.cos(np.pi / n_volumes * (times + 0.5) * k) for k in range(1, order)]
    return np.stack(columns, axis=1) if columns else np.zeros((n_volumes, 0))


def expansions(name: str, values: np.ndarray) -> dict:
    """The fMRIPrep expansions of one regressor: itself, derivative1, power2 and both."""
    derivative = np.concatenate([[np.nan], np.diff(values)])
    return {name: values, f"{name}_derivative1": derivative, f"{name}_power2": values**2,
            f"{name}_derivative1_power2": derivative**2}


def standardised_dvars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DVARS and DVARS standardised by its expected value under temporal independence.

    Parameters
    ----------
    data : (T, V) array of in-mask intensities.

    Returns
    -------
    dvars, std_dvars : (T,) arrays, NaN in the first row.
    """
    data = np.asarray(data, dtype=np.float32)
    scaled = data * np.float32(1000.0 / np.median(data.mean(axis=0)))  # intensity normalisation to mode 1000
    # The expected DVARS is a mean over voxels; every fourth voxel estimates it to a fraction of a
    # percent at a quarter of the cost (the per-voxel quantiles were a fifth of a run's simulation).
    sample = scaled[:, ::4]
    q25, q75 = np.quantile(sample, [0.25, 0.75], axis=0)
    robust_sd = (q75 - q25) / 1.349
    centred = sample - sample.mean(axis=0)
    lag1 = np.einsum("tv,tv->v", centred[1:], centred[:-1]) / np.maximum(np.einsum("tv,tv->v", centred, centred),
                                                                         1e-12)
    expected = np.mean(np.sqrt(np.maximum(2 * (1 - lag1), 0)) * robust_sd)
    dvars = np.sqrt(np.mean(np.diff(scaled, axis=0) ** 2, axis=1, dtype=np.float64))
    return np.concatenate([[np.nan], dvars]), np.concatenate([[np.nan], dvars / expected])


def compcor(data: np.ndarray, basis: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of high-passed, variance-normalised voxel time series.

    Parameters
    ----------
    data : (T, V) array
    basis : (T, K) high-pass regressors, removed together with the mean.
    n_components : int

    Returns
    -------
    components : (T, n) array, orthonormal columns
    variance_explained : (n,) fraction of the total variance for each component
    singular_values : (n,)
    """
    design, _ = np.linalg.qr(np.column_stack([np.ones(len(data)), basis]))
    data = np.asarray(data, dtype=np.float64)
    residual = data - design @ (design.T @ data)
    scale = residual.std(axis=0)
    residual = residual[:, scale > 0] / scale[scale > 0]
    # The leading eigenpairs of the (T, T) Gram matrix: the same components as an SVD, much cheaper;
    # its trace is the total variance.
    gram = residual @ residual.T
    n = min(n_components, len(gram))
    eigenvalues, eigenvectors = linalg.eigh(gram, subset_by_index=[len(gram) - n, len(gram) - 1])
    eigenvalues, eigenvectors = np.clip(eigenvalues[::-1], 0, None), eigenvectors[:, ::-1]
    explained = eigenvalues / np.trace(gram)
    return eigenvectors, explained, np.sqrt(eigenvalues)


def _relative_rmsd(motion: MotionTrace) -> np.ndarray:
    """Root-mean-square displacement between volumes within an 80 mm sphere (small angles)."""
    dt = np.diff(motion.translations, axis=0)
    dr = np.diff(motion.rotations, axis=0)
    rms = np.sqrt((dt**2).sum(axis=1) + (_RMSD_RADIUS_MM**2 / 5.0) * 2 * (dr**2).sum(axis=1))
    return np.concatenate([[np.nan], rms])


def _one_hot(prefix: str, volumes: np.ndarray, n_volumes: int) -> dict:
    columns = {}
    for number, volume in enumerate(volumes):
        column = np.zeros(n_volumes)
        column[volume] = 1.0
        columns[f"{prefix}{number:02d}"] = column
    return columns


def confounds_table(data: np.ndarray, tissue: np.ndarray, motion: MotionTrace, repetition_time: float,
                    dummy_scans: int, tissue_codes: dict) -> tuple[pd.DataFrame, dict]:
    """Build the confounds table and its JSON description for one run.

    Parameters
    ----------
    data : (T, V) in-mask intensities.
    tissue : (V,) tissue code of each voxel.
    motion : MotionTrace
    repetition_time : float
    dummy_scans : int
        Leading non-steady-state volumes.
    tissue_codes : dict
        ``{"csf": code, "wm": code}`` in ``tissue``.

    Returns
    -------
    table : pandas.DataFrame
    description : dict
        The confounds JSON sidecar (CompCor metadata as fMRIPrep writes it).
    """
    n_volumes = data.shape[0]
    csf = tissue == tissue_codes["csf"]
    wm = tissue == tissue_codes["wm"]
    steady = slice(dummy_scans, None)  # fMRIPrep leaves the non-steady-state volumes out of CompCor
    variance = data[steady].var(axis=0)
    high_variance = variance >= np.quantile(variance, 0.98)  # the tCompCor mask
    columns = _mask_means(data, csf, wm, high_variance)
    dvars, std_dvars = standardised_dvars(data)
    fd = framewise_displacement(motion)
    fd[0] = np.nan
    columns.update({"std_dvars": std_dvars, "dvars": dvars, "framewise_displacement": fd,
                    "rmsd": _relative_rmsd(motion)})

    basis = cosine_basis(n_volumes, repetition_time)
    masks = [("t_comp_cor", "tCompCor", None, high_variance, 3),
             ("a_comp_cor", "aCompCor", "combined", csf | wm, 5),
             ("c_comp_cor", "aCompCor", "CSF", csf, 3),
             ("w_comp_cor", "aCompCor", "WM", wm, 3)]
    components, description = _compcor_columns(data, basis, steady, masks)
    columns.update(components)
    for k in range(basis.shape[1]):
        columns[f"cosine{k:02d}"] = basis[:, k]
    columns.update(_one_hot("non_steady_state_outlier", np.arange(dummy_scans), n_volumes))
    columns.update(_motion_parameters(motion))
    outliers = np.flatnonzero((np.nan_to_num(fd) > FD_THRESHOLD_MM) | (np.nan_to_num(std_dvars) > STD_DVARS_THRESHOLD))
    columns.update(_one_hot("motion_outlier", outliers, n_volumes))
    return pd.DataFrame(columns), description


def _mask_means(data: np.ndarray, csf: np.ndarray, wm: np.ndarray, high_variance: np.ndarray) -> dict:
    """Mean signal of the brain, CSF and WM (with expansions), and of the CSF+WM and tCompCor masks."""
    columns: dict = {}
    columns.update(expansions("global_signal", data.mean(axis=1)))
    columns.update(expansions("csf", data[:, csf].mean(axis=1)))
    columns.update(expansions("white_matter", data[:, wm].mean(axis=1)))
    columns["csf_wm"] = data[:, csf | wm].mean(axis=1)
    columns["tcompcor"] = data[:, high_variance].mean(axis=1)
    return columns


def _compcor_columns(data: np.ndarray, basis: np.ndarray, steady: slice, masks: list) -> tuple[dict, dict]:
    """CompCor components of each mask, zero in the non-steady-state volumes, and their JSON entries.

    Parameters
    ----------
    data : (T, V) in-mask intensities.
    basis : (T, K) high-pass regressors.
    steady : slice of the steady-state volumes.
    masks : list of (column prefix, method, mask name or None, (V,) bool voxels, number of components).

    Returns
    -------
    columns : dict, ``<prefix>_XX`` -> (T,) component
    description : dict, ``<prefix>_XX`` -> its JSON sidecar entry
    """
    n_volumes = data.shape[0]
    columns, description = {}, {}
    for prefix, method, mask_name, voxels, n_components in masks:
        components, explained, singular = compcor(data[steady][:, voxels], basis[steady], n_components)
        cumulative = np.cumsum(explained)
        for k in range(components.shape[1]):
            name = f"{prefix}_{k:02d}"
            full = np.zeros(n_volumes)
            full[steady] = components[:, k]
            columns[name] = full
            entry = {"Method": method, "Retained": True, "SingularValue": float(singular[k]),
                     "VarianceExplained": float(explained[k]), "CumulativeVarianceExplained": float(cumulative[k])}
            if mask_name is not None:
                entry["Mask"] = mask_name
            description[name] = entry
    return columns, description


def _motion_parameters(motion: MotionTrace) -> dict:
    """The six rigid-body parameters (``trans_x`` ... ``rot_z``) with their expansions."""
    position = np.concatenate([motion.translations, motion.rotations], axis=1)
    columns: dict = {}
    for index, name in enumerate(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")):
        columns.update(expansions(name, position[:, index]))
    return columns
