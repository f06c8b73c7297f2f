"""Find the runs of an fMRIPrep derivatives folder and read their metadata.

Discovery only lists directories (``os.scandir``), never opens a file, so that it
stays fast for cohorts of tens of thousands of runs; reading the TR and checking
the files is left to the job that processes each run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..bids import parse_bids_name

__all__ = ["Run", "find_runs", "read_repetition_time", "load_participants", "InputError", "runs_fingerprint"]

_BOLD_SUFFIX = "_desc-preproc_bold.nii.gz"
_CONFOUNDS_SUFFIXES = ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv")


class InputError(ValueError):
    """An input file is missing, unreadable or inconsistent; the message names file, problem and fix."""


@dataclass(frozen=True)
class Run:
    """One run and its companion files (paths may not exist).

    ``kind`` says where its cortical signal comes from: a volumetric ``bold`` image, a pair of
    fMRIPrep surface files (``surfaces``, left then right; ``bold`` is then the run's volumetric
    image if there is one, for the subcortical and cerebellar channels), or XCP-D parcellated
    ``tables``.
    """

    run_id: str  # sub-<l>[_ses-<l>]_task-<l>[_acq-..][_run-<i>]: the run's entities before hemi/space
    participant_id: str  # sub-<l>
    session: str | None
    bold: str | None
    sidecar: str  # the JSON sidecar that gives the TR
    confounds: str | None  # None when neither confounds naming is present
    kind: str = "volume"
    surfaces: tuple | None = None
    tables: tuple | None = None

    @property
    def source(self) -> str:
        """The file the run's cortical signal is read from."""
        if self.kind == "surface":
            return self.surfaces[0]
        if self.kind == "xcpd":
            return self.tables[0]
        return self.bold


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
              sessions: list[str] | None = None, runs: list[str] | None = None, kind: str = "volume",
              surface_space: str = "fsaverage5", segmentations: list[str] | None = None) -> list[Run]:
    """List the runs of an fMRIPrep (or XCP-D) derivatives folder.

    Parameters
    ----------
    derivatives : str or Path
        The output folder (holding ``sub-*``).
    space, task : str
        Entities the volumetric runs must carry (for XCP-D tables, the tables' space).
    res : str, optional
        The ``res`` entity to take; when None, a run present at several resolutions is an error.
    sessions, runs : list of str, optional
        Keep only these session labels / run indices.
    kind : {"volume", "surface", "xcpd"}
        ``volume``: ``*_space-<space>[_res-<r>]_desc-preproc_bold.nii.gz``;
        ``surface``: ``*_hemi-L_space-<surface_space>_bold.func.gii`` with its ``hemi-R`` twin;
        ``xcpd``: ``*_space-<space>_seg-<seg>_stat-mean_timeseries.tsv`` for every seg in ``segmentations``.

    Returns
    -------
    list of Run, sorted by run_id.
    """
    derivatives = Path(derivatives)
    if not derivatives.is_dir():
        raise InputError(f"{derivatives}: the derivatives folder does not exist. "
                         "Set data.derivatives to the folder that holds the sub-* directories.")
    if kind not in ("volume", "surface", "xcpd"):
        raise ValueError(f"kind must be volume, surface or xcpd, received {kind!r}")
    if kind == "xcpd" and not segmentations:
        raise InputError("XCP-D input needs data.xcpd_segmentations (the seg- labels of the tables to read).")
    wanted_runs = None if runs is None else {int(r) for r in runs}  # run-01 and run-1 are the same run

    def wanted(entities: dict) -> bool:
        return (entities.get("task") == task
                and (sessions is None or entities.get("ses") in sessions)
                and (wanted_runs is None or int(entities.get("run", 1)) in wanted_runs))

    found: dict[str, Run] = {}
    for func in _func_dirs(derivatives):
        names = set(os.listdir(func))
        volumes = _volumes_in(func, names, space, res, wanted)
        for run_id, bold in volumes.items():
            confounds = next((c for c in (run_id + s for s in _CONFOUNDS_SUFFIXES) if c in names), None)
            entities = parse_bids_name(Path(bold).name)["entities"]
            common = dict(run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
                          confounds=os.path.join(func, confounds) if confounds else None)
            if kind == "volume":
                found[run_id] = Run(bold=bold, sidecar=bold[: -len(".nii.gz")] + ".json", **common)
        if kind == "surface":
            for name in sorted(names):
                if not name.endswith(f"_hemi-L_space-{surface_space}_bold.func.gii"):
                    continue
                entities = parse_bids_name(name)["entities"]
                right = name.replace("_hemi-L_", "_hemi-R_")
                if not wanted(entities) or right not in names:
                    continue
                run_id = name[: name.index("_hemi-")]
                confounds = next((c for c in (run_id + s for s in _CONFOUNDS_SUFFIXES) if c in names), None)
                found[run_id] = Run(
                    run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
                    bold=volumes.get(run_id), sidecar=os.path.join(func, name.replace(".func.gii", ".json")),
                    confounds=os.path.join(func, confounds) if confounds else None, kind="surface",
                    surfaces=(os.path.join(func, name), os.path.join(func, right)))
        elif kind == "xcpd":
            tables: dict[str, dict] = {}
            for name in sorted(names):
                if not name.endswith("_stat-mean_timeseries.tsv") or "_seg-" not in name:
                    continue
                entities = parse_bids_name(name)["entities"]
                if entities.get("space") != space or entities.get("seg") not in segmentations or not wanted(entities):
                    continue
                tables.setdefault(name[: name.index("_space-")], {})[entities["seg"]] = os.path.join(func, name)
            for run_id, by_seg in tables.items():
                if set(by_seg) != set(segmentations):
                    continue
                entities = parse_bids_name(Path(by_seg[segmentations[0]]).name)["entities"]
                ordered = tuple(by_seg[seg] for seg in segmentations)
                found[run_id] = Run(
                    run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
                    bold=None, sidecar=ordered[0][: -len(".tsv")] + ".json", confounds=None, kind="xcpd",
                    tables=ordered)
    return [found[key] for key in sorted(found)]


def _volumes_in(func: str, names: set, space: str, res: str | None, wanted) -> dict:
    """run_id -> path of the volumetric preprocessed BOLD runs of one func folder."""
    volumes: dict[str, str] = {}
    for name in sorted(names):
        if not name.endswith(_BOLD_SUFFIX):
            continue
        entities = parse_bids_name(name)["entities"]
        if entities.get("space") != space or "hemi" in entities or not wanted(entities):
            continue
        if res is not None and entities.get("res") != res:
            continue
        run_id = name[: name.index("_space-")]
        if run_id in volumes:
            raise InputError(f"{func}: run {run_id} exists at several resolutions ({Path(volumes[run_id]).name} "
                             f"and {name}). Set data.res to the one to use.")
        volumes[run_id] = os.path.join(func, name)
    return volumes


def read_repetition_time(bold: str | Path, sidecar: str | Path, header_tr: float | None) -> float:
    """The run's TR: from the JSON sidecar, else from the NIfTI header; an error if they disagree.

    ``header_tr`` is the fourth zoom of the image header (``None`` or 0 when absent).
    """
    sidecar = Path(sidecar)
    header_tr = float(header_tr) if header_tr else None
    sidecar_tr = None
    if sidecar.is_file():
        try:
            payload = json.loads(sidecar.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{sidecar}: not valid JSON ({error}). Repair or remove the sidecar.") from None
        sidecar_tr = payload.get("RepetitionTime")
        if sidecar_tr is None and isinstance(payload.get("SamplingFrequency"), (int, float)):
            sidecar_tr = 1.0 / payload["SamplingFrequency"]  # how parcellated time-series sidecars state it
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


def runs_fingerprint(runs) -> str:
    """A digest of the path, size and modification time of every file the runs are read from.

    The workflow passes it as a parameter of each preprocessing batch: a changed, added or
    removed file changes its batch's digest, and Snakemake's parameter trigger reruns that
    batch only, without making every file of a large cohort a node of the job graph.
    """
    digest = hashlib.sha256()
    for run in runs:
        files = [*(run.surfaces or ()), *(run.tables or ()), run.bold, run.sidecar, run.confounds]
        for path in files:
            if path is None:
                continue
            try:
                status = os.stat(path)
                digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()

