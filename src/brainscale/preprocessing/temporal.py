"""Temporal harmonisation: confound regression, censoring, resampling, band-pass, z-score.

Resampling to the target TR uses polyphase FIR resampling (``scipy.signal.resample_poly``)
at the exact rational ratio of the two TRs. Its Kaiser-window low-pass removes everything
above the new Nyquist frequency before decimating, so a faster source TR (0.72, 0.8 s) does
not alias into the band, and a slower one (2.5 s) is interpolated band-limited.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

__all__ = ["regress_confounds", "interpolate_censored", "resample_to_tr", "band_pass", "zscore"]


def regress_confounds(data: np.ndarray, confounds: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Remove confounds (and the mean), fitting on the kept volumes only.

    Parameters
    ----------
    data : (T, C) array
    confounds : (T, K) array, no NaN
    kept : (T,) bool array; censored volumes do not inform the fit.

    Returns
    -------
    (T, C) residuals for every volume.
    """
    design = np.column_stack([np.ones(len(data)), confounds])
    beta, *_ = np.linalg.lstsq(design[kept], data[kept], rcond=None)
    return data - design @ beta


def interpolate_censored(data: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Replace censored volumes by linear interpolation between the nearest kept ones."""
    if kept.all():
        return data
    times = np.arange(len(data))
    filled = data.copy()
    for column in range(data.shape[1]):
        filled[~kept, column] = np.interp(times[~kept], times[kept], data[kept, column])
    return filled


def resample_to_tr(data: np.ndarray, source_tr: float, target_tr: float) -> np.ndarray:
    """Resample (T, C) samples taken every ``source_tr`` s to every ``target_tr`` s.

    The output has ``ceil(T * source_tr / target_tr)`` samples, the first at time 0.
    """
    if source_tr <= 0 or target_tr <= 0:
        raise ValueError(f"TRs must be positive, received {source_tr} and {target_tr}")
    ratio = Fraction(source_tr / target_tr).limit_denominator(1000)
    if ratio == 1:
        return data.copy()
    return signal.resample_poly(data, ratio.numerator, ratio.denominator, axis=0, padtype="line")


def band_pass(data: np.ndarray, repetition_time: float, high_pass: float, low_pass: float,
              order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass of (T, C) data."""
    nyquist = 0.5 / repetition_time
    if not 0 < high_pass < low_pass < nyquist:
        raise ValueError(f"need 0 < high_pass < low_pass < Nyquist ({nyquist:g} Hz), "
                         f"received {high_pass} and {low_pass}")
    sections = signal.butter(order, [high_pass, low_pass], btype="bandpass", fs=1.0 / repetition_time, output="sos")
    # scipy's default edge padding, shortened for series too short for it (such runs fail QC anyway).
    padlen = min(3 * (2 * len(sections) + 1), data.shape[0] - 1)
    return signal.sosfiltfilt(sections, data, axis=0, padlen=padlen)


def zscore(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each column (population SD); NaN-safe.

    Returns
    -------
    scored : (T, C) array; a constant or all-NaN column becomes zeros.
    constant : (C,) bool, the columns that had no variance.
    """
    mean = np.nanmean(data, axis=0) if np.isnan(data).any() else data.mean(axis=0)
    sd = np.nanstd(data, axis=0) if np.isnan(data).any() else data.std(axis=0)
    constant = ~(sd > 1e-12 * np.maximum(np.abs(mean), 1.0))
    scored = np.zeros_like(data)
    good = ~constant
    scored[:, good] = (data[:, good] - mean[good]) / sd[good]
    return np.nan_to_num(scored, nan=0.0), constant
