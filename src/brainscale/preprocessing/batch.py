"""Process a batch of runs into one output folder: a matrix per included run and a QC table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_directory, atomic_file
from .atlases import channel_coordinates, load_atlas_set, network_mapping
from .discovery import InputError, Run
from .pipeline import QC_COLUMNS, ParcellationCache, preprocess_run, write_run

__all__ = ["preprocess_batch", "write_network_mapping", "TIMESERIES_SUFFIX"]

TIMESERIES_SUFFIX = "_desc-clean_timeseries.npz"


def _brain_mask_of(bold: str) -> str:
    return bold.replace("_desc-preproc_bold.nii.gz", "_desc-brain_mask.nii.gz")


def preprocess_batch(runs: list[Run], atlas_specs: dict, settings: dict, output_dir: str | Path, *,
                     space: str | None, participants: pd.Index | None = None, surface: dict | None = None,
                     log=print) -> pd.DataFrame:
    """Preprocess ``runs`` into ``output_dir`` (written atomically).

    A run whose files are bad, or that fails QC, is excluded: it gets a QC row with the
    reason and no matrix, and the batch goes on.

    Returns
    -------
    pandas.DataFrame
        The QC table (also written as ``qc.tsv`` in ``output_dir``).

    ``surface`` (``{"left", "right"}`` atlas files) is required for surface runs.
    """
    atlases = load_atlas_set(atlas_specs, surface)
    cache = ParcellationCache(atlases, space)
    rows = []
    with atomic_directory(output_dir, overwrite=True) as folder:
        for run in runs:
            try:
                mask = _brain_mask_of(run.bold) if run.bold else None
                result = preprocess_run(run, cache, settings, participants, brain_mask_path=mask)
            except InputError as error:
                log(f"EXCLUDED {run.run_id}: {error}")
                rows.append({"run_id": run.run_id, "participant_id": run.participant_id,
                             "session": run.session or "n/a", "source": run.source, "included": False,
                             "exclusion": "input_error", "reason": str(error), "note": ""})
                continue
            if result.qc["note"]:
                log(f"NOTE {run.run_id}: {result.qc['note']}")
            if result.qc["included"]:
                write_run(folder / f"{run.run_id}{TIMESERIES_SUFFIX}", result, settings["target_tr"])
                log(f"ok {run.run_id}: {result.qc['n_volumes_out']} volumes")
            else:
                log(f"EXCLUDED {run.run_id}: {result.qc['reason']}")
            rows.append(result.qc)
        table = pd.DataFrame(rows, columns=QC_COLUMNS)
        table.to_csv(folder / "qc.tsv", sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return table


def write_network_mapping(atlas_specs: dict, npz_path: str | Path, channels_path: str | Path,
                          surface: dict | None = None) -> None:
    """Write ``network_mapping.npz`` (reference keys) and a channel table for the atlases.

    With a 17-network cortical atlas (and its 7-network companion in ``atlas_specs``, see
    :func:`~brainscale.preprocessing.atlases.load_atlas_set`) the file also holds
    ``network_map_schaefer400_17n``, the 17-network of each channel in 7-network channel order.
    It also holds ``channel_coordinates`` (channels, 3), each channel's position in mm in the
    channel order (:func:`~brainscale.preprocessing.atlases.channel_coordinates`), for
    objectives with spatial positions (the MAE).
    """
    atlases = load_atlas_set(atlas_specs, surface)
    coordinates = channel_coordinates(atlases, atlas_specs, surface)
    with atomic_file(npz_path) as temporary:
        np.savez(temporary, **network_mapping(atlases), channel_coordinates=coordinates)
    with atomic_file(channels_path) as temporary:
        atlases.channel_table().to_csv(temporary, sep="\t", index=False)
