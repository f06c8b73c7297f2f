"""Ground-truth brain dynamics: latent traits -> network dynamics -> parcel signals.

Each subject has traits ``z``: its latent traits (standard normal), with age in years on one scale
for every site (:func:`~.cohort.dynamics_traits`). They set three things of the nine network
signals (7 cortical networks, subcortex, cerebellum):

- coupling: the correlation of the networks' neural innovations, a base matrix
  plus ``effect_size * z_k`` on a few network pairs per trait (``COUPLING_EFFECTS``);
- amplitude: a per-network gain ``exp(0.15 * z_k)`` on a few networks (``AMPLITUDE_EFFECTS``);
- temporal autocorrelation: the time constant of the neural process grows with the age trait.

Neural activity is an AR(1) process at steps of at most 0.5 s, convolved with a double-gamma
haemodynamic response, so the sampled signal has a BOLD-like spectrum (most power
below 0.1 Hz). Parcel signals are network signals through loadings plus
parcel-specific processes of the same kind.

Beside the traits, every subject has an individual signature (:class:`Individuality`): the
spatial maps of a few fine-scale modes, smooth over the brain and the subject's own, which
carry part of each parcel's signal beyond its network. The maps persist across the subject's
runs and sessions, except for a run-to-run share (the state of the day), so FC is individual
in many directions at once, as a real connectome is, and still only partly stable. The time
constant of the parcels' own processes is individual too (individual spectra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal, stats
from threadpoolctl import threadpool_limits

__all__ = [
    "NETWORKS",
    "LATENTS",
    "COUPLING_EFFECTS",
    "AMPLITUDE_EFFECTS",
    "SubjectDynamics",
    "subject_dynamics",
    "haemodynamic_response",
    "bold_like_processes",
    "network_signals",
    "parcel_signals",
    "Individuality",
    "spatial_smoothing",
    "individual_modes",
]

NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default", "Subcortical", "Cerebellum")
LATENTS = ("sex", "age", "cognition", "nuisance")

_BASE_COUPLING = {
    ("Vis", "SomMot"): 0.30, ("Vis", "DorsAttn"): 0.35, ("SomMot", "SalVentAttn"): 0.30,
    ("DorsAttn", "Cont"): 0.25, ("SalVentAttn", "Cont"): 0.30, ("Cont", "Default"): 0.20,
    ("DorsAttn", "Default"): -0.25, ("SalVentAttn", "Default"): -0.15, ("Limbic", "Default"): 0.30,
    ("Limbic", "Subcortical"): 0.25, ("Subcortical", "SalVentAttn"): 0.15,
    ("Cerebellum", "SomMot"): 0.25, ("Cerebellum", "Default"): 0.20, ("Cerebellum", "Cont"): 0.15,
}

#: Network pairs whose coupling moves with each latent trait, with the sign of the change.
COUPLING_EFFECTS = {
    "sex": [("Vis", "SomMot", +1), ("DorsAttn", "Default", -1), ("Limbic", "Subcortical", +1),
            ("SalVentAttn", "Cont", -1)],
    "age": [("Cont", "Default", -1), ("SomMot", "SalVentAttn", +1), ("Cerebellum", "SomMot", -1)],
    "cognition": [("DorsAttn", "Cont", +1), ("Cont", "Default", +1), ("Vis", "DorsAttn", +1)],
    "nuisance": [("Vis", "Cerebellum", +1), ("Limbic", "Default", -1)],
}

#: Networks whose amplitude moves with each latent trait, with the sign of the change.
AMPLITUDE_EFFECTS = {
    "sex": [("SomMot", +1)],
    "age": [("Default", -1), ("Vis", -1)],
    "cognition": [("Cont", +1)],
    "nuisance": [("Limbic", +1)],
}

_AMPLITUDE_GAIN = 0.15
_BASE_TIME_CONSTANT_S = 1.5
_AGE_TIME_CONSTANT_GAIN = 0.15
_MAX_FINE_DT = 0.5  # seconds; neural steps are TR / ceil(TR / 0.5), fine enough for the HRF
_HRF_BURN_IN_S = 40.0


@dataclass
class SubjectDynamics:
    """The ground-truth dynamics of one subject."""

    coupling: np.ndarray  # (9, 9) correlation of neural innovations
    amplitude: np.ndarray  # (9,) network gains
    time_constant_s: float  # of the neural AR(1) process


def _pattern(pairs, with_sign=True):
    matrix = np.zeros((len(NETWORKS), len(NETWORKS)))
    for item in pairs:
        a, b = NETWORKS.index(item[0]), NETWORKS.index(item[1])
        value = item[2] if with_sign else 1.0
        matrix[a, b] = matrix[b, a] = value
    return matrix


def _nearest_correlation(matrix: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Clip eigenvalues so the matrix is positive definite, then rescale to unit diagonal."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    fixed = (vectors * np.maximum(values, floor)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return fixed / np.outer(scale, scale)


def base_coupling() -> np.ndarray:
    """(9, 9) network coupling of a subject whose latent traits are all zero."""
    matrix = np.eye(len(NETWORKS))
    for (a, b), value in _BASE_COUPLING.items():
        i, j = NETWORKS.index(a), NETWORKS.index(b)
        matrix[i, j] = matrix[j, i] = value
    return matrix


def subject_dynamics(latents: np.ndarray, effect_size: float) -> SubjectDynamics:
    """Turn one subject's latent traits (len(LATENTS),) into its network dynamics."""
    coupling = base_coupling()
    amplitude_log = np.zeros(len(NETWORKS))
    for k, trait in enumerate(LATENTS):
        coupling = coupling + effect_size * latents[k] * _pattern(COUPLING_EFFECTS[trait])
        for net, sign in AMPLITUDE_EFFECTS[trait]:
            amplitude_log[NETWORKS.index(net)] += _AMPLITUDE_GAIN * sign * latents[k]
    time_constant = _BASE_TIME_CONSTANT_S * np.exp(_AGE_TIME_CONSTANT_GAIN * latents[LATENTS.index("age")])
    return SubjectDynamics(coupling=_nearest_correlation(coupling), amplitude=np.exp(amplitude_log),
                           time_constant_s=float(time_constant))


def haemodynamic_response(dt: float, duration_s: float = 32.0) -> np.ndarray:
    """Canonical double-gamma response (peak near 5 s, undershoot near 15 s), unit energy."""
    t = np.arange(0.0, duration_s, dt)
    response = stats.gamma.pdf(t, 6) - stats.gamma.pdf(t, 16) / 6.0
    return response / np.linalg.norm(response)


def _neural_to_bold_kernel(time_constant_s: float, dt: float) -> np.ndarray:
    """Impulse response of the AR(1) neural process followed by the haemodynamic response."""
    phi = np.exp(-dt / time_constant_s)
    hrf = haemodynamic_response(dt)
    padded = np.concatenate([hrf, np.zeros(int(10 * time_constant_s / dt))])
    return signal.lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], padded)


def bold_like_processes(rng: np.random.Generator, n_volumes: int, repetition_time: float,
                        n_signals: int, time_constant_s: float = _BASE_TIME_CONSTANT_S,
                        mixing: np.ndarray | None = None) -> np.ndarray:
    """Sample haemodynamically filtered AR(1) processes at the volume times.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_volumes : int
        Number of samples, one per volume.
    repetition_time : float
        Seconds between samples.
    n_signals : int
        Number of processes.
    time_constant_s : float
        Time constant of the neural AR(1) process.
    mixing : (n_signals, n_signals) array, optional
        Cholesky factor that correlates the innovations.

    Returns
    -------
    (n_volumes, n_signals) float64 array, each column of unit standard deviation.
    """
    if repetition_time <= 0:
        raise ValueError(f"repetition_time must be positive, received {repetition_time}")
    step = int(np.ceil(repetition_time / _MAX_FINE_DT))
    dt = repetition_time / step
    burn_in = step * int(np.ceil(_HRF_BURN_IN_S / repetition_time))
    n_fine = burn_in + n_volumes * step
    innovations = rng.standard_normal((n_fine, n_signals))
    if mixing is not None:
        innovations = innovations @ mixing.T
    bold = signal.fftconvolve(innovations, _neural_to_bold_kernel(time_constant_s, dt)[:, None], mode="full",
                              axes=0)[:n_fine]
    sampled = bold[burn_in::step][:n_volumes]
    return sampled / sampled.std(axis=0, keepdims=True)


def network_signals(rng: np.random.Generator, dynamics: SubjectDynamics, n_volumes: int,
                    repetition_time: float) -> np.ndarray:
    """(n_volumes, 9) network BOLD signals with the subject's coupling and amplitudes."""
    mixing = np.linalg.cholesky(dynamics.coupling)
    signals = bold_like_processes(rng, n_volumes, repetition_time, len(NETWORKS),
                                  dynamics.time_constant_s, mixing)
    return signals * dynamics.amplitude


def parcel_signals(rng: np.random.Generator, networks: np.ndarray, network_of_parcel: np.ndarray,
                   loadings: np.ndarray, repetition_time: float, time_constant_s: float,
                   modes: np.ndarray | None = None, mode_share: float = 0.0) -> np.ndarray:
    """(n_volumes, n_parcels) parcel signals: loading * network signal + the rest.

    ``loadings`` (n_parcels,) lie in (0, 1); the rest has weight ``sqrt(1 - loading**2)`` so that
    a parcel of a unit-amplitude network has unit variance. The rest is the parcel's own process,
    or, with ``modes`` (n_volumes, n_parcels) of unit variance, ``mode_share`` of its variance
    from the modes and the remainder from the own process.
    """
    own = bold_like_processes(rng, networks.shape[0], repetition_time, len(network_of_parcel), time_constant_s)
    if modes is not None and mode_share > 0:
        own = np.sqrt(mode_share) * modes + np.sqrt(1 - mode_share) * own
    return networks[:, network_of_parcel] * loadings + own * np.sqrt(1 - loadings**2)


@dataclass(frozen=True)
class Individuality:
    """The individual signature beyond the latent traits (the ``simulate.individuality`` settings).

    Attributes
    ----------
    modes : int
        Fine-scale modes per subject; 0 turns the signature off.
    share : float
        Share of a parcel's variance beyond its network that the modes carry.
    smoothness_mm : float
        Length scale of the modes' spatial maps (Gaussian kernel over parcel centres).
    state_share : float
        Share of the maps' variance drawn anew for every run (the rest is the subject's own).
    spectrum_sd : float
        Standard deviation of the log of a subject's own-process time constant around the
        trait-driven one.
    """

    modes: int = 0
    share: float = 0.0
    smoothness_mm: float = 20.0
    state_share: float = 0.0
    spectrum_sd: float = 0.0


def spatial_smoothing(centroids: np.ndarray, smoothness_mm: float) -> np.ndarray:
    """(n_parcels, n_parcels) factor ``S`` with ``S @ S.T`` the Gaussian-kernel correlation of parcel centres.

    ``S @ g`` for white noise ``g`` is a unit-variance random map, correlated between parcels
    closer than about ``smoothness_mm``. Computed on one BLAS thread: the eigenvectors of a
    multithreaded ``eigh`` differ in the last bits, and the simulation must not depend on the cores.
    """
    distance2 = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    kernel = np.exp(-distance2 / (2 * smoothness_mm**2))
    with threadpool_limits(limits=1):
        values, vectors = np.linalg.eigh(kernel)
        return vectors * np.sqrt(np.clip(values, 0, None)) @ vectors.T


def individual_modes(subject_rng: np.random.Generator, run_rng: np.random.Generator, smoothing: np.ndarray,
                     individuality: Individuality, n_volumes: int, repetition_time: float,
                     time_constant_s: float) -> np.ndarray:
    """(n_volumes, n_parcels) unit-variance signal of one run's fine-scale modes.

    The maps are the subject's (``subject_rng``, the same generator state in every run) mixed
    with a run-specific share ``state_share`` (``run_rng``); the modes' time courses are the run's.
    """
    n_parcels, k = len(smoothing), individuality.modes
    own_maps = smoothing @ subject_rng.standard_normal((n_parcels, k))
    state_maps = smoothing @ run_rng.standard_normal((n_parcels, k))
    maps = np.sqrt(1 - individuality.state_share) * own_maps + np.sqrt(individuality.state_share) * state_maps
    courses = bold_like_processes(run_rng, n_volumes, repetition_time, k, time_constant_s)
    signals = courses @ maps.T
    return signals / signals.std(axis=0, keepdims=True)
