"""One run from fMRIPrep derivatives to a (channels, T) network-ordered matrix at the target TR.

Steps: load the 4-D image (or the two surface files, or XCP-D's parcellated tables);
read the TR; load confounds with nilearn's fMRIPrep interface; drop the
non-steady-state volumes; average every atlas parcel in one pass over the data;
regress the confounds (fitted on uncensored volumes); fill censored volumes by
interpolation; resample to the target TR; band-pass; z-score each channel; measure
quality and decide exclusion.

Confounds tables are read in the naming of fMRIPrep 1.2 to 20.2 LTS and of 21 and later
(``normalise_confounds_names``): nilearn is handed a copy of the run's own table (the one
discovery paired with it) under a plain name, its columns in the naming nilearn reads.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse

from ..io import atomic_file
from .atlases import AtlasSet, parcellation_weights
from .discovery import InputError, Run, read_json_sidecar, read_repetition_time
from .temporal import band_pass, interpolate_censored, regress_confounds, resample_to_tr, zscore

__all__ = ["RunResult", "load_bold", "load_func_gifti", "parcellate", "ParcellationCache", "preprocess_run",
           "write_run", "normalise_confounds_names", "exclusion_counts", "require_included_runs",
           "AllRunsExcludedError", "included_mask", "QC_COLUMNS"]

QC_COLUMNS = ["run_id", "participant_id", "session", "source", "source_tr", "n_volumes_in", "n_dummy",
              "mean_fd", "fraction_high_motion", "fraction_scrubbed", "duration_s", "n_volumes_out",
              "n_empty_rois", "n_constant_rois", "included", "exclusion", "reason", "note"]


@dataclass
class RunResult:
    """The output of one run: its matrix and its QC row."""

    timeseries: np.ndarray  # (C, T) float32 in channel order
    channel_missing: np.ndarray  # (C,) bool: empty, constant or not provided by the input
    qc: dict = field(default_factory=dict)


def load_bold(path: str | Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load a 4-D BOLD image; return the image and its data array (as stored, scaled if needed)."""
    path = Path(path)
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found. Rerun discovery or restore the file.") from None
    except Exception as error:  # nibabel raises several types for unreadable headers
        raise InputError(f"{path}: not a readable NIfTI image ({error}). Re-export it from fMRIPrep.") from None
    if image.ndim != 4:
        raise InputError(f"{path}: image is {image.ndim}-D with shape {image.shape}; a 4-D BOLD series "
                         "(x, y, z, time) is expected. Point data.derivatives at the desc-preproc_bold runs.")
    try:
        data = np.asarray(image.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as error:
        raise InputError(f"{path}: the compressed data are truncated or corrupt ({error}). "
                         "Copy the file again from the fMRIPrep output.") from None
    return image, data


def parcellate(data: np.ndarray, voxels: np.ndarray, weights: sparse.csr_matrix) -> np.ndarray:
    """Average each channel's voxels at every volume: (T, C) float64.

    Voxels that are not finite at every volume are left out of their channel's mean; a
    channel left with no voxel is all-NaN.
    """
    n_volumes = data.shape[-1]
    flat = data.reshape(-1, n_volumes, order="F")  # a view for Fortran-ordered NIfTI data
    values = np.asarray(flat[voxels], dtype=np.float64)  # (V, T)
    if data.dtype.kind == "f":  # integer images cannot hold NaN
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            values[~finite] = 0.0
            kept = weights @ sparse.diags(finite.astype(np.float64))
            coverage = np.asarray(kept.sum(axis=1)).ravel()
            with np.errstate(invalid="ignore", divide="ignore"):
                return ((kept @ values) / coverage[:, None]).T
    return (weights @ values).T


class ParcellationCache:
    """Parcellation weights per grid, so runs that share a grid share the work."""

    def __init__(self, atlases: AtlasSet, bold_space: str | None):
        self.atlases = atlases
        self.bold_space = bold_space
        self._cache: dict = {}

    def weights_for(self, image, brain_mask_path: str | None):
        key = (image.shape[:3], image.affine.round(4).tobytes())
        if key not in self._cache:
            mask = nib.load(brain_mask_path) if brain_mask_path and os.path.isfile(brain_mask_path) else None
            self._cache[key] = parcellation_weights(self.atlases, image, bold_space=self.bold_space, brain_mask=mask)
        return self._cache[key]


def load_func_gifti(path: str | Path) -> tuple[np.ndarray, float | None]:
    """(n_vertices, T) data of an fMRIPrep ``.func.gii`` and its TR from the ``TimeStep`` metadata (ms)."""
    path = Path(path)
    try:
        image = nib.load(path)
        data = np.column_stack([np.asarray(array.data, dtype=np.float64) for array in image.darrays])
    except FileNotFoundError:
        raise InputError(f"{path}: file not found. Restore it from the fMRIPrep output.") from None
    except Exception as error:
        raise InputError(f"{path}: not a readable GIFTI time series ({error}). Re-export it from fMRIPrep.") from None
    if data.ndim != 2 or data.shape[1] < 2:
        raise InputError(f"{path}: {data.shape[1] if data.ndim == 2 else 0} volumes; a time series is expected.")
    step = image.darrays[0].meta.get("TimeStep")
    return data, float(step) / 1000.0 if step else None


def _volume_parcels(run: Run, cache: "ParcellationCache", brain_mask_path: str | None):
    image, data = load_bold(run.bold)
    voxels, weights = cache.weights_for(image, brain_mask_path)
    return parcellate(data, voxels, weights), image.header.get_zooms()[3], np.ones(cache.atlases.n_channels, bool)


def _surface_parcels(run: Run, cache: "ParcellationCache", brain_mask_path: str | None):
    """Cortex from the two surface files, subcortex and cerebellum from the volumetric run if any."""
    atlases = cache.atlases
    n_cortical = len(atlases.labels["cortical"])
    series, steps = [], []
    for path, channel_of_vertex in zip(run.surfaces, atlases.surface_channels):
        data, step = load_func_gifti(path)
        if len(data) != len(channel_of_vertex):
            raise InputError(f"{path}: {len(data)} vertices but the surface atlas has {len(channel_of_vertex)}. "
                             "Use an atlas on the same surface (e.g. fsaverage5 for space-fsaverage5).")
        series.append(data)
        steps.append(step)
    if series[0].shape[1] != series[1].shape[1]:
        raise InputError(f"{run.surfaces[1]}: {series[1].shape[1]} volumes but the left hemisphere has "
                         f"{series[0].shape[1]}. Use the two files of one run.")
    n_volumes = series[0].shape[1]
    values = np.concatenate(series)  # (vertices, T)
    channels = np.concatenate(atlases.surface_channels)
    inside = channels >= 0
    finite = np.isfinite(values[inside]).all(axis=1)
    weights = sparse.csr_matrix((finite.astype(np.float64), (channels[inside], np.arange(inside.sum()))),
                                shape=(n_cortical, int(inside.sum())))
    coverage = np.asarray(weights.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        cortex = (weights @ np.nan_to_num(values[inside])) / coverage[:, None]
    parcels = np.full((n_volumes, atlases.n_channels), np.nan)
    parcels[:, :n_cortical] = cortex.T
    provided = np.zeros(atlases.n_channels, dtype=bool)
    provided[:n_cortical] = True
    if run.bold is not None and os.path.isfile(run.bold):
        volume, _, _ = _volume_parcels(run, cache, brain_mask_path)
        if len(volume) != n_volumes:
            raise InputError(f"{run.bold}: {len(volume)} volumes but the surface files have {n_volumes}. "
                             "Use the volumetric output of the same run.")
        parcels[:, n_cortical:] = volume[:, n_cortical:]
        provided[n_cortical:] = True
    return parcels, steps[0], provided


def _xcpd_parcels(run: Run, atlases: AtlasSet) -> tuple[np.ndarray, np.ndarray]:
    """Columns of XCP-D's parcellated tables matched to the channels by label name, and which matched."""
    columns: dict = {}
    lengths = set()
    for path in run.tables:
        try:
            table = pd.read_csv(path, sep="\t", na_values=["n/a"])
        except Exception as error:
            raise InputError(f"{path}: not a readable XCP-D time-series table ({error}).") from None
        lengths.add(len(table))
        columns.update({str(name): table[name].to_numpy(dtype=np.float64) for name in table.columns})
    if len(lengths) > 1:
        raise InputError(f"{run.tables[0]}: the tables of run {run.run_id} differ in length {sorted(lengths)}.")
    names = [name for kind in ("cortical", "subcortical", "cerebellar") for name in atlases.names[kind]]
    if not any(name in columns for name in names):
        raise InputError(f"{run.tables[0]}: no column matches an atlas label name (e.g. {names[0]}). "
                         "Use label tables whose names are the XCP-D column names.")
    n_volumes = lengths.pop()
    provided = np.array([name in columns for name in names])
    return np.column_stack([columns.get(name, np.full(n_volumes, np.nan)) for name in names]), provided


def _leading_dummies(table: pd.DataFrame) -> int:
    flagged = table.filter(like="non_steady_state_outlier").to_numpy().sum(axis=1) > 0
    count = 0
    while count < len(flagged) and flagged[count]:
        count += 1
    return count


# fMRIPrep writes cosine00, non_steady_state_outlier00, motion_outlier00; other writers put an underscore
# before the number (cosine_00 ...). Both are read, under fMRIPrep's names.
_NUMBERED_CONFOUNDS = re.compile(r"^(cosine|non_steady_state_outlier|motion_outlier)_?(\d+)$")
# fMRIPrep 20.2+/21+ name the aCompCor components of the CSF and WM masks c_comp_cor_XX and w_comp_cor_XX;
# fMRIPrep 1.4-20.1 numbered them a_comp_cor_XX after the combined mask's, with the mask in the JSON:
# the layout nilearn's load_confounds selects masks in.
_SEPARATE_ACOMPCOR = (("c_comp_cor", "CSF"), ("w_comp_cor", "WM"))


def _is_camel_case(name: str) -> bool:
    return name != name.lower() and name != name.upper() and "_" not in name  # nilearn's test


def normalise_confounds_names(columns: list[str], description: dict | None, *,
                              source: str = "confounds") -> tuple[list[str], dict | None]:
    """Confounds columns (and JSON sidecar) of any fMRIPrep >= 1.2, named as nilearn's interface reads them.

    - ``cosine_XX``, ``non_steady_state_outlier_XX``, ``motion_outlier_XX`` become ``cosineXX`` ...,
      fMRIPrep's names (nilearn reads either; one naming downstream).
    - ``c_comp_cor_XX`` and ``w_comp_cor_XX`` (CSF and WM masks, fMRIPrep 21+) become ``a_comp_cor_NN``
      numbered after the combined mask's components, their mask (``CSF``, ``WM``) in the JSON: the
      fMRIPrep 1.4-20.1 layout, in which nilearn's ``compcor="anat_separated"`` finds them.
    - Every other column (``trans_x``, ``csf_wm``, ``tcompcor``, ``t_comp_cor_XX``, ``aroma_motion_XX``...)
      is kept as it is.

    Parameters
    ----------
    columns : list of str
        The table's header.
    description : dict or None
        The confounds JSON sidecar, None when there is none.
    source : str
        The file, for messages.

    Returns
    -------
    columns, description : the renamed header and a renamed copy of the sidecar.

    Raises
    ------
    InputError
        For the CamelCase naming of fMRIPrep 1.0-1.1 (``RotX``, ``aCompCor00``), which nilearn does not read.
    """
    camel = [name for name in columns if _is_camel_case(name)]
    if camel:
        raise InputError(f"{source}: confounds columns in the CamelCase naming of fMRIPrep 1.0-1.1 "
                         f"({', '.join(camel[:4])}); the snake_case naming of fMRIPrep 1.2 and later (trans_x, "
                         "a_comp_cor_00, cosine00) is read. Rerun fMRIPrep (20.2 LTS or later) on these data.")
    renames: dict[str, str] = {}
    for name in columns:
        match = _NUMBERED_CONFOUNDS.match(name)
        if match:
            renames[name] = f"{match[1]}{match[2]}"
    description = None if description is None else dict(description)
    named = set(columns) | set(description or ())
    next_number = len([name for name in named if re.fullmatch(r"a_comp_cor_\d+", name)])
    for prefix, mask in _SEPARATE_ACOMPCOR:
        found = sorted((name for name in named if re.fullmatch(rf"{prefix}_\d+", name)),
                       key=lambda name: int(name.rsplit("_", 1)[1]))
        for name in found:
            renames[name] = f"a_comp_cor_{next_number:02d}"
            next_number += 1
            if description is not None and isinstance(description.get(name), dict):
                entry = dict(description.pop(name))
                entry.setdefault("Method", "aCompCor")
                entry.setdefault("Mask", mask)
                description[renames[name]] = entry
    renamed = [renames.get(name, name) for name in columns]
    if len(set(renamed)) != len(renamed):
        twice = sorted({name for name in renamed if renamed.count(name) > 1})
        raise InputError(f"{source}: the confounds columns {twice[:4]} appear under two namings "
                         "(e.g. cosine00 and cosine_00). Keep the table fMRIPrep wrote.")
    return renamed, description


@contextmanager
def _staging_directory():
    """A temporary folder whose path has no 'tsv' in it (nilearn finds the JSON by replacing 'tsv' with 'json')."""
    for _ in range(100):
        with tempfile.TemporaryDirectory(prefix="brainscale-confounds-") as folder:
            if "tsv" not in folder:
                yield Path(folder)
                return
    raise RuntimeError(f"no temporary folder without 'tsv' in its path under {tempfile.gettempdir()}; set TMPDIR")


def _load_confounds(run: Run, n_volumes: int, denoise: dict) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Return (raw confounds table, selected confounds, kept mask) for a run.

    nilearn's ``load_confounds_strategy`` looks the table up beside an image by its name; it is given
    a staged copy of the run's own table (header renamed by ``normalise_confounds_names``, the rows
    byte for byte) beside a plain image name, so that every fMRIPrep layout, 20.2 surfaces included,
    is denoised with the table discovery paired with the run.
    """
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    if run.confounds is None or not os.path.isfile(run.confounds):
        raise InputError(f"{run.source}: no confounds file beside it (expected {run.run_id}_desc-confounds_timeseries"
                         ".tsv or the older _desc-confounds_regressors.tsv). Copy it from the fMRIPrep output.")
    text = Path(run.confounds).read_text(encoding="utf-8")  # read once: parsed here, staged for nilearn below
    table = pd.read_csv(io.StringIO(text), sep="\t", na_values=["n/a"])
    if len(table) != n_volumes:
        raise InputError(f"{run.confounds}: {len(table)} rows but the image has {n_volumes} volumes. "
                         "The confounds belong to another run or were cut; use the file fMRIPrep wrote for this run.")
    header, newline, body = text.partition("\n")
    columns = header.rstrip("\r").split("\t")
    description = read_json_sidecar(run.confounds[: -len(".tsv")] + ".json",
                                    fix="Copy it again from the fMRIPrep output.")
    renamed, description = normalise_confounds_names(columns, description, source=run.confounds)
    if len(renamed) == len(table.columns):
        table.columns = renamed
    options = {key: value for key, value in denoise.items() if key != "strategy" and value is not None}
    with _staging_directory() as folder, warnings.catch_warnings():
        # nilearn warns about options the strategy ignores; the config documents them.
        warnings.simplefilter("ignore")
        staged = folder / "sub-run_task-run_desc-confounds_timeseries.tsv"
        staged.write_text("\t".join(renamed) + newline + body, encoding="utf-8")
        if description is not None:
            staged.with_suffix(".json").write_text(json.dumps(description))
        try:
            selected, sample_mask = load_confounds_strategy(str(folder / "sub-run_task-run_desc-preproc_bold.nii.gz"),
                                                            denoise_strategy=denoise["strategy"], **options)
        except ValueError as error:  # nilearn's report of missing or unreadable confounds
            raise InputError(f"{run.confounds}: nilearn cannot select the '{denoise['strategy']}' confounds "
                             f"({error}). Check preprocess.denoise against the table's columns.") from None
    kept = np.zeros(n_volumes, dtype=bool)
    kept[np.arange(n_volumes) if sample_mask is None else np.asarray(sample_mask)] = True
    return table, selected.to_numpy(dtype=np.float64), kept


def preprocess_run(run: Run, cache: ParcellationCache, settings: dict, participants: pd.Index | None = None,
                   brain_mask_path: str | None = None) -> RunResult:
    """Process one run (see the module docstring); exclusion reasons go to ``qc['reason']``.

    Parameters
    ----------
    run : Run
    cache : ParcellationCache
    settings : dict
        The validated ``preprocess`` config section.
    participants : pandas.Index, optional
        Known participant ids; a run of an unknown participant is kept with a note.
    brain_mask_path : str, optional
        The run's brain mask, used to check that the atlases are in the BOLD space.

    Raises
    ------
    InputError
        When the run's files are missing, unreadable or inconsistent.
    """
    qc = {"run_id": run.run_id, "participant_id": run.participant_id, "session": run.session or "n/a",
          "source": run.source, "note": ""}
    parcels, provided, source_tr, table, confounds, kept = _read_run(run, cache, settings, brain_mask_path)
    n_volumes = len(parcels)
    dummies = _leading_dummies(table)
    parcels, confounds, kept = parcels[dummies:], confounds[dummies:], kept[dummies:]
    fd = _framewise_displacement(table, dummies, len(kept))
    parcels, kept, empty = _censor_missing_values(parcels, kept, provided)
    scored, constant = _denoise_and_harmonise(run, parcels, confounds, kept, source_tr, settings)
    constant &= ~empty & provided
    qc.update({
        "source_tr": source_tr, "n_volumes_in": n_volumes, "n_dummy": dummies,
        **_motion_measures(fd, kept, source_tr, settings["qc"]["fd_threshold"]),
        "n_volumes_out": int(len(scored)), "n_empty_rois": int(empty.sum()), "n_constant_rois": int(constant.sum()),
    })
    reasons = _exclusion_reasons(qc, settings)
    if participants is not None and run.participant_id not in participants:
        qc["note"] = (f"{run.participant_id} is not in participants.tsv: its phenotypes will be missing "
                      "(add a row to use them)")
    qc["included"] = not reasons
    qc["exclusion"] = ",".join(code for code, _ in reasons)
    qc["reason"] = "; ".join(text for _, text in reasons)
    return RunResult(timeseries=scored.T.astype(np.float32), channel_missing=empty | constant | ~provided, qc=qc)


def _read_run(run: Run, cache: ParcellationCache, settings: dict, brain_mask_path: str | None):
    """The run's parcel series and the confounds that go with them.

    Returns
    -------
    parcels : (T, C) array
    provided : (C,) bool, the channels the input holds
    source_tr : float
    table : pandas.DataFrame, the confounds table as read (empty columns for XCP-D)
    confounds : (T, K) array, the selected confounds
    kept : (T,) bool, the volumes not censored by the denoising strategy
    """
    if run.kind == "xcpd":  # already denoised by XCP-D: no confounds, nothing censored here
        parcels, provided = _xcpd_parcels(run, cache.atlases)
        source_tr = read_repetition_time(run.source, run.sidecar, None)
        table = pd.DataFrame(index=range(len(parcels)))
        confounds, kept = np.zeros((len(parcels), 0)), np.ones(len(parcels), dtype=bool)
    else:
        extract = _surface_parcels if run.kind == "surface" else _volume_parcels
        parcels, header_tr, provided = extract(run, cache, brain_mask_path)
        source_tr = read_repetition_time(run.source, run.sidecar, header_tr)
        table, confounds, kept = _load_confounds(run, len(parcels), settings["denoise"])
    return parcels, provided, source_tr, table, confounds, kept


def _framewise_displacement(table: pd.DataFrame, dummies: int, n_volumes: int) -> np.ndarray:
    """FD of the volumes after the dummies; all NaN when the table has none (XCP-D input)."""
    if "framewise_displacement" in table:
        return table["framewise_displacement"].to_numpy(dtype=float)[dummies:]
    return np.full(n_volumes, np.nan)


def _censor_missing_values(parcels: np.ndarray, kept: np.ndarray, provided: np.ndarray):
    """Zero the channels that are absent or all-NaN, and censor the volumes with a NaN left.

    Returns
    -------
    parcels : (T, C) array without NaN
    kept : (T,) bool, less the censored volumes
    empty : (C,) bool, the all-NaN channels
    """
    # A channel the input does not provide (surface run without a volume, XCP-D table without the
    # label) is missing by design: masked downstream, never a QC failure.
    parcels[:, ~provided] = 0.0
    empty = np.isnan(parcels).all(axis=0)
    parcels[:, empty] = 0.0
    partial = ~np.isfinite(parcels).all(axis=1)  # volumes with a NaN somewhere are censored
    if partial.any():
        kept = kept & ~partial
        parcels = np.nan_to_num(parcels)
    return parcels, kept, empty


def _denoise_and_harmonise(run: Run, parcels: np.ndarray, confounds: np.ndarray, kept: np.ndarray,
                           source_tr: float, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Regress the confounds, fill the censored volumes, resample to the target TR, band-pass, z-score.

    Returns the z-scored (T', C) series and the (C,) channels that were constant.
    """
    if kept.sum() <= confounds.shape[1] + 1:
        raise InputError(f"{run.source}: {kept.sum()} volumes survive censoring, too few for "
                         f"{confounds.shape[1]} confounds. Exclude the run or use a lighter denoising strategy.")
    cleaned = interpolate_censored(regress_confounds(parcels, confounds, kept), kept)
    resampled = resample_to_tr(cleaned, source_tr, settings["target_tr"])
    if len(resampled) < 2:
        raise InputError(f"{run.source}: {len(resampled)} volume(s) after resampling to TR {settings['target_tr']} s; "
                         "the run is far too short to use.")
    filtered = band_pass(resampled, settings["target_tr"], settings["high_pass"], settings["low_pass"])
    return zscore(filtered)


def _motion_measures(fd: np.ndarray, kept: np.ndarray, source_tr: float, fd_threshold: float) -> dict:
    """The QC row's motion, scrubbing and duration measures."""
    return {
        "mean_fd": float(np.nanmean(fd)) if np.isfinite(fd).any() else float("nan"),  # NaN never fails QC
        "fraction_high_motion": float(np.mean(np.nan_to_num(fd) > fd_threshold)),
        "fraction_scrubbed": float(1.0 - kept.mean()), "duration_s": float(len(kept) * source_tr),
    }


def _exclusion_reasons(qc: dict, settings: dict) -> list[tuple[str, str]]:
    """(code, explanation) of every QC threshold of ``settings`` the run's QC row exceeds."""
    thresholds = settings["qc"]
    reasons = []
    if qc["mean_fd"] > thresholds["max_mean_fd"]:
        reasons.append(("high_mean_fd", f"mean FD {qc['mean_fd']:.2f} mm > {thresholds['max_mean_fd']}"))
    if qc["fraction_high_motion"] > thresholds["max_fraction_high_motion"]:
        reasons.append(("many_high_motion_volumes",
                        f"{qc['fraction_high_motion']:.0%} of volumes with FD > {thresholds['fd_threshold']} mm "
                        f"> {thresholds['max_fraction_high_motion']:.0%}"))
    if qc["fraction_scrubbed"] > thresholds["max_fraction_scrubbed"]:
        reasons.append(("too_much_scrubbing",
                        f"{qc['fraction_scrubbed']:.0%} scrubbed > {thresholds['max_fraction_scrubbed']:.0%}"))
    if qc["n_volumes_out"] < settings["crop_length"]:
        reasons.append(("too_short", f"{qc['n_volumes_out']} volumes at TR {settings['target_tr']} s, shorter "
                                     f"than one {settings['crop_length']}-TR crop"))
    if qc["n_empty_rois"] + qc["n_constant_rois"] > thresholds["max_empty_rois"]:
        reasons.append(("empty_or_constant_rois", f"{qc['n_empty_rois']} empty and {qc['n_constant_rois']} "
                                                  f"constant ROIs > {thresholds['max_empty_rois']}"))
    return reasons


def included_mask(table: pd.DataFrame) -> pd.Series:
    """The ``included`` column as booleans, whether it was read back as bool or as text."""
    column = table["included"]
    if column.dtype == bool:
        return column
    return column.astype("string").str.strip().str.lower().isin(["true", "1"]).astype(bool)


def exclusion_counts(table: pd.DataFrame) -> pd.Series:
    """Excluded runs per exclusion code of a QC table (a run may carry several codes), most frequent first.

    Empty when no run is excluded; an excluded run without a code counts as ``unknown``.
    """
    excluded = table.loc[~included_mask(table), "exclusion"].astype("string").fillna("")
    codes = excluded.str.split(",").explode().str.strip()
    codes = codes.where(codes != "", "unknown") if len(codes) else codes
    counts = codes.value_counts()
    order = sorted(counts.index, key=lambda code: (-counts[code], code))
    return counts.reindex(order).astype(int).rename("runs")


class AllRunsExcludedError(InputError):
    """No run passed preprocessing and QC: nothing can be sharded."""


def require_included_runs(table: pd.DataFrame, *, where: str = "results/qc/runs.tsv") -> None:
    """Stop, listing the exclusion reasons with their counts, when no run of the QC table is included.

    Parameters
    ----------
    table : pandas.DataFrame
        The QC table of every run (``QC_COLUMNS``).
    where : str
        Where the user finds the whole table, for the message.

    Raises
    ------
    AllRunsExcludedError
    """
    if len(table) and included_mask(table).any():
        return
    if not len(table):
        raise AllRunsExcludedError(f"No run reached QC ({where} is empty): nothing to shard. "
                                   "Check data.derivatives and the discovery filters.")
    counts = exclusion_counts(table)
    excluded = table.loc[~included_mask(table)].sort_values("run_id")
    codes = excluded["exclusion"].astype("string").fillna("").str.split(",")
    examples = []
    for code, count in counts.items():
        first = next(index for index, listed in codes.items()
                     if code in [c.strip() for c in listed] or (code == "unknown" and listed == [""]))
        reason = str(excluded.loc[first, "reason"]) if pd.notna(excluded.loc[first, "reason"]) else "no reason given"
        reason = reason if len(reason) <= 240 else reason[:237] + "..."
        examples.append(f"{code}: {count} run{'s' if count != 1 else ''} "
                        f"(e.g. {excluded.loc[first, 'run_id']}: {reason})")
    raise AllRunsExcludedError(
        f"All {len(table)} runs were excluded by preprocessing and QC, so there is nothing to shard "
        f"(every run and its reason: {where}). Exclusions by reason (a run may have several): "
        + "; ".join(examples)
        + ". Fix the input files named, or relax preprocess.qc, preprocess.crop_length or preprocess.denoise.")


def write_run(path: str | Path, result: RunResult, target_tr: float) -> None:
    """Write one run's matrix and metadata as ``.npz`` (through a temporary name)."""
    with atomic_file(path) as temporary:
        np.savez(temporary, timeseries=result.timeseries, channel_missing=result.channel_missing,
                 repetition_time=np.float64(target_tr), source_repetition_time=np.float64(result.qc["source_tr"]),
                 source=np.str_(result.qc["source"]), run_id=np.str_(result.qc["run_id"]),
                 participant_id=np.str_(result.qc["participant_id"]))
