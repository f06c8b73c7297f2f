"""Find the runs of an fMRIPrep derivatives folder and read their metadata.

Discovery only lists directories (``os.scandir``), never opens a file, so that it
stays fast for cohorts of tens of thousands of runs; reading the TR and checking
the files is left to the job that processes each run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..bids import parse_bids_name

__all__ = ["Run", "find_runs", "read_repetition_time", "load_participants", "InputError"]

_BOLD_SUFFIX = "_desc-preproc_bold.nii.gz"
_CONFOUNDS_SUFFIXES = ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv")


class InputError(ValueError):
    """An input file is missing, unreadable or inconsistent; the message names file, problem and fix."""


@dataclass(frozen=True)
class Run:
    """One volumetric BOLD run and its companion files (paths may not exist)."""

    run_id: str  # sub-<l>[_ses-<l>]_task-<l>[_acq-..][_run-<i>]: the run's entities before space
    participant_id: str  # sub-<l>
    session: str | None
    bold: str
    sidecar: str
    confounds: str | None  # None when neither confounds naming is present


def _func_dirs(derivatives: Path):
    """Yield every sub-*/func and sub-*/ses-*/func folder."""
    with os.scandir(derivatives) as subjects:
        for subject in sorted(subjects, key=lambda e: e.name):
            if not (subject.name.startswith("sub-") and subject.is_dir()):
                continue
            with os.scandir(subject.path) as children:
                for child in sorted(children, key=lambda e: e.name):
                    if child.name == "func" and child.is_dir():
                        yield child.path
                    elif child.name.startswith("ses-") and child.is_dir():
                        func = os.path.join(child.path, "func")
                        if os.path.isdir(func):
                            yield func


def find_runs(derivatives: str | Path, *, space: str, task: str, res: str | None = None,
              sessions: list[str] | None = None, runs: list[str] | None = None) -> list[Run]:
    """List the volumetric preprocessed BOLD runs of an fMRIPrep derivatives folder.

    Parameters
    ----------
    derivatives : str or Path
        The fMRIPrep output folder (holding ``sub-*``).
    space, task : str
        Entities the runs must carry.
    res : str, optional
        The ``res`` entity to take; when None, a run present at several resolutions is an error.
    sessions, runs : list of str, optional
        Keep only these session labels / run indices.

    Returns
    -------
    list of Run, sorted by run_id.
    """
    derivatives = Path(derivatives)
    if not derivatives.is_dir():
        raise InputError(f"{derivatives}: the fMRIPrep derivatives folder does not exist. "
                         "Set data.derivatives to the folder that holds the sub-* directories.")
    wanted_runs = None if runs is None else {int(r) for r in runs}  # run-01 and run-1 are the same run
    found: dict[str, Run] = {}
    for func in _func_dirs(derivatives):
        names = set(os.listdir(func))
        for name in sorted(names):
            if not name.endswith(_BOLD_SUFFIX):
                continue
            entities = parse_bids_name(name)["entities"]
            if entities.get("space") != space or entities.get("task") != task or "hemi" in entities:
                continue
            if res is not None and entities.get("res") != res:
                continue
            if sessions is not None and entities.get("ses") not in sessions:
                continue
            if wanted_runs is not None and int(entities.get("run", 1)) not in wanted_runs:
                continue
            run_id = name[: name.index("_space-")]
            if run_id in found:
                raise InputError(
                    f"{func}: run {run_id} exists at several resolutions ({found[run_id].bold} and {name}). "
                    "Set data.res to the one to use.")
            confounds = next((c for c in (run_id + s for s in _CONFOUNDS_SUFFIXES) if c in names), None)
            found[run_id] = Run(
                run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
                bold=os.path.join(func, name), sidecar=os.path.join(func, name[: -len(".nii.gz")] + ".json"),
                confounds=os.path.join(func, confounds) if confounds else None,
            )
    return [found[key] for key in sorted(found)]


def read_repetition_time(bold: str | Path, sidecar: str | Path, header_tr: float | None) -> float:
    """The run's TR: from the JSON sidecar, else from the NIfTI header; an error if they disagree.

    ``header_tr`` is the fourth zoom of the image header (``None`` or 0 when absent).
    """
    sidecar = Path(sidecar)
    header_tr = float(header_tr) if header_tr else None
    sidecar_tr = None
    if sidecar.is_file():
        try:
            sidecar_tr = json.loads(sidecar.read_text()).get("RepetitionTime")
        except json.JSONDecodeError as error:
            raise InputError(f"{sidecar}: not valid JSON ({error}). Repair or remove the sidecar.") from None
    if sidecar_tr is None and header_tr is None:
        raise InputError(f"{bold}: no RepetitionTime in {sidecar.name} and none in the NIfTI header. "
                         "Add RepetitionTime (seconds) to the JSON sidecar.")
    if sidecar_tr is not None and header_tr is not None and abs(sidecar_tr - header_tr) > 1e-3 * sidecar_tr:
        raise InputError(f"{bold}: RepetitionTime {sidecar_tr} s in {sidecar.name} disagrees with the NIfTI "
                         f"header's {header_tr} s. Correct whichever is wrong (fMRIPrep writes both).")
    return float(sidecar_tr if sidecar_tr is not None else header_tr)


def load_participants(path: str | Path, phenotypes: dict[str, str]) -> pd.DataFrame:
    """Read participants.tsv and rename the configured phenotype columns.

    Parameters
    ----------
    path : str or Path
    phenotypes : dict
        Pipeline name -> column of the table.

    Returns
    -------
    pandas.DataFrame indexed by ``participant_id`` (always ``sub-<label>``), one column per phenotype.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: participants table not found. Set data.participants to your participants.tsv.")
    table = pd.read_csv(path, sep="\t", na_values=["n/a"], dtype={"participant_id": str})
    if "participant_id" not in table.columns:
        raise InputError(f"{path}: no participant_id column. Add one (BIDS requires it).")
    missing = sorted(set(phenotypes.values()) - set(table.columns))
    if missing:
        raise InputError(f"{path}: columns {missing} named in data.phenotypes are absent (columns: "
                         f"{', '.join(table.columns)}). Fix data.phenotypes.")
    ids = table["participant_id"].astype(str)
    table.index = ids.where(ids.str.startswith("sub-"), "sub-" + ids)
    table.index.name = "participant_id"
    if table.index.duplicated().any():
        raise InputError(f"{path}: participant_id repeated: {sorted(set(table.index[table.index.duplicated()]))}.")
    return table[list(phenotypes.values())].rename(columns={v: k for k, v in phenotypes.items()})
