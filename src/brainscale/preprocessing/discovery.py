"""Find the runs of an fMRIPrep derivatives folder and read their metadata.

Discovery only lists directories (``os.scandir``), never opens a file, so that it
stays fast for cohorts of tens of thousands of runs; reading the TR and checking
the files is left to the job that processes each run.

File names of fMRIPrep 20.2 LTS and of 21+ are read alike (``bids.parse_fmriprep_name``):
volumes ``<run>_space-<s>[_res-<r>]_desc-preproc_bold.nii.gz``; surfaces
``<run>_hemi-<L|R>_space-<s>[_den-<d>]_bold.func.gii`` (21+) or ``<run>_space-<s>[_den-<d>]_hemi-<L|R>.func.gii``
(20.2). ``<run>`` is ``sub-<l>[_ses-<l>]_task-<l>[_acq-<l>][_ce-<l>][_rec-<l>][_dir-<l>][_run-<i>][_echo-<i>]``:
runs that differ in any of these entities are distinct runs with distinct ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..bids import parse_fmriprep_name, run_id_of
from ..errors import InputError

__all__ = ["Run", "find_runs", "read_repetition_time", "load_participants", "InputError", "runs_fingerprint",
           "expected_names", "no_runs_message"]

_BOLD_SUFFIX = "_desc-preproc_bold.nii.gz"
_CONFOUNDS_SUFFIXES = ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv")
#: Surface spaces fMRIPrep names two ways: ``space-fsaverage5`` or ``space-fsaverage_den-10k``.
_SURFACE_DENSITIES = {"fsaverage5": ("fsaverage", "10k"), "fsaverage6": ("fsaverage", "41k")}


@dataclass(frozen=True)
class Run:
    """One run and its companion files (paths may not exist).

    ``kind`` says where its cortical signal comes from: a volumetric ``bold`` image, a pair of
    fMRIPrep surface files (``surfaces``, left then right; ``bold`` is then the run's volumetric
    image if there is one, for the subcortical and cerebellar channels), or XCP-D parcellated
    ``tables``.
    """

    run_id: str  # sub-<l>[_ses-<l>]_task-<l>[_acq-..][_dir-..][_run-<i>][_echo-<i>]: the entities before hemi/space
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
              surface_space: str = "fsaverage5", segmentations: list[str] | None = None,
              require: bool = False) -> list[Run]:
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
        ``surface``: ``*_hemi-L_space-<surface_space>[_den-<d>]_bold.func.gii`` (fMRIPrep 21+) or
        ``*_space-<surface_space>[_den-<d>]_hemi-L.func.gii`` (20.2 LTS) with its ``hemi-R`` twin
        (``fsaverage5`` also matches ``space-fsaverage_den-10k``, ``fsaverage6`` ``den-41k``);
        ``xcpd``: ``*_space-<space>_seg-<seg>_stat-mean_timeseries.tsv`` for every seg in ``segmentations``.
    require : bool
        Raise ``InputError`` (``no_runs_message``) instead of returning an empty list.

    Returns
    -------
    list of Run, sorted by run_id.

    Raises
    ------
    InputError
        When the folder is missing, a file name is not one fMRIPrep writes, a run is present at
        several resolutions (or surface densities), or ``require`` is set and no run matches.
    """
    derivatives = Path(derivatives)
    _check_find_options(derivatives, kind, segmentations)
    wanted = _run_filter(task, sessions, runs)
    found: dict[str, Run] = {}
    for func in _func_dirs(derivatives):
        names = set(os.listdir(func))
        # Listed for every kind: a surface run takes its volumetric twin for the subcortex.
        volumes = _volumes_in(func, names, space, res, wanted)
        if kind == "volume":
            found.update(_volume_runs(func, names, volumes))
        elif kind == "surface":
            found.update(_surface_runs(func, names, volumes, surface_space, wanted))
        else:
            found.update(_xcpd_runs(func, names, space, segmentations, wanted))
    if require and not found:
        raise InputError(no_runs_message(derivatives, kind=kind, space=space, task=task, res=res,
                                         surface_space=surface_space, segmentations=segmentations,
                                         sessions=sessions, runs=runs))
    return [found[key] for key in sorted(found)]


def _check_find_options(derivatives: Path, kind: str, segmentations: list[str] | None) -> None:
    """Refuse a missing derivatives folder, an unknown input kind, and XCP-D input without segmentations."""
    if not derivatives.is_dir():
        raise InputError(f"{derivatives}: the derivatives folder does not exist. "
                         "Set data.derivatives to the folder that holds the sub-* directories.")
    if kind not in ("volume", "surface", "xcpd"):
        raise ValueError(f"kind must be volume, surface or xcpd, received {kind!r}")
    if kind == "xcpd" and not segmentations:
        raise InputError("XCP-D input needs data.xcpd_segmentations (the seg- labels of the tables to read).")


def _run_filter(task: str, sessions: list[str] | None, runs: list[str] | None):
    """A predicate on a file's entities: the task, and the sessions and run indices asked for (None: any)."""
    wanted_runs = None if runs is None else {int(r) for r in runs}  # run-01 and run-1 are the same run

    def wanted(entities: dict) -> bool:
        return (entities.get("task") == task
                and (sessions is None or entities.get("ses") in sessions)
                and (wanted_runs is None or int(entities.get("run", 1)) in wanted_runs))

    return wanted


def _volume_runs(func: str, names: set, volumes: dict) -> dict[str, Run]:
    """run_id -> Run of the volumetric runs of one func folder, with their sidecar and confounds."""
    return {run_id: Run(run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
                        bold=bold, sidecar=bold[: -len(".nii.gz")] + ".json",
                        confounds=_confounds_in(func, names, entities))
            for run_id, (bold, entities) in volumes.items()}


def _surface_runs(func: str, names: set, volumes: dict, surface_space: str, wanted) -> dict[str, Run]:
    """run_id -> Run of the surface runs of one func folder, each with its volumetric twin if there is one."""
    found = {}
    for run_id, (left, right, entities) in _surfaces_in(func, names, surface_space, wanted).items():
        bold = volumes[run_id][0] if run_id in volumes else None
        found[run_id] = Run(
            run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
            bold=bold, sidecar=_surface_sidecar(func, names, left, run_id, bold),
            confounds=_confounds_in(func, names, entities), kind="surface",
            surfaces=(os.path.join(func, left), os.path.join(func, right)))
    return found


def _xcpd_tables_in(func: str, names: set, space: str, segmentations: list[str], wanted) -> dict:
    """run_id -> {seg: path} of the XCP-D parcellated tables of one func folder."""
    tables: dict[str, dict] = {}
    for name in sorted(names):
        if not name.endswith("_stat-mean_timeseries.tsv") or "_seg-" not in name:
            continue
        entities = _parse(func, name)["entities"]
        if entities.get("space") != space or entities.get("seg") not in segmentations or not wanted(entities):
            continue
        tables.setdefault(run_id_of(entities), {})[entities["seg"]] = os.path.join(func, name)
    return tables


def _xcpd_runs(func: str, names: set, space: str, segmentations: list[str], wanted) -> dict[str, Run]:
    """run_id -> Run of the XCP-D runs of one func folder that have a table for every segmentation."""
    found = {}
    for run_id, by_seg in _xcpd_tables_in(func, names, space, segmentations, wanted).items():
        if set(by_seg) != set(segmentations):
            continue
        entities = _parse(func, Path(by_seg[segmentations[0]]).name)["entities"]
        ordered = tuple(by_seg[seg] for seg in segmentations)
        found[run_id] = Run(
            run_id=run_id, participant_id=f"sub-{entities['sub']}", session=entities.get("ses"),
            bold=None, sidecar=ordered[0][: -len(".tsv")] + ".json", confounds=None, kind="xcpd",
            tables=ordered)
    return found


def _parse(func: str, name: str) -> dict:
    try:
        return parse_fmriprep_name(name)
    except ValueError as error:
        raise InputError(f"{os.path.join(func, name)}: not a file name fMRIPrep writes ({error}). "
                         "Rename it as fMRIPrep would, or move it out of the derivatives folder.") from None


def _confounds_in(func: str, names: set, entities: dict) -> str | None:
    """The run's confounds table: same run entities, either naming; a per-echo run falls back on the
    run's echo-less table (fMRIPrep writes one confounds table for a multi-echo run)."""
    stems = [run_id_of(entities)]
    if "echo" in entities:
        stems.append(run_id_of({key: value for key, value in entities.items() if key != "echo"}))
    for stem in stems:
        for suffix in _CONFOUNDS_SUFFIXES:
            if stem + suffix in names:
                return os.path.join(func, stem + suffix)
    return None


def _volumes_in(func: str, names: set, space: str, res: str | None, wanted) -> dict:
    """run_id -> (path, entities) of the volumetric preprocessed BOLD runs of one func folder."""
    volumes: dict[str, tuple] = {}
    for name in sorted(names):
        if not name.endswith(_BOLD_SUFFIX):
            continue
        entities = _parse(func, name)["entities"]
        if entities.get("space") != space or "hemi" in entities or not wanted(entities):
            continue
        if res is not None and entities.get("res") != res:
            continue
        run_id = run_id_of(entities)
        if run_id in volumes:
            raise InputError(f"{func}: run {run_id} exists at several resolutions ({Path(volumes[run_id][0]).name} "
                             f"and {name}). Set data.res to the one to use.")
        volumes[run_id] = (os.path.join(func, name), entities)
    return volumes


def _surface_space_matches(entities: dict, surface_space: str) -> bool:
    if entities.get("space") == surface_space:
        return True
    return (entities.get("space"), entities.get("den")) == _SURFACE_DENSITIES.get(surface_space)


def _surfaces_in(func: str, names: set, surface_space: str, wanted) -> dict:
    """run_id -> (left name, right name, entities) of the surface series of one func folder."""
    surfaces: dict[str, tuple] = {}
    for name in sorted(names):
        if not name.endswith(".func.gii"):
            continue
        parsed = _parse(func, name)
        entities = parsed["entities"]
        if (parsed["suffix"] != "bold" or entities.get("hemi") != "L" or entities.get("desc") not in (None, "preproc")
                or not _surface_space_matches(entities, surface_space) or not wanted(entities)):
            continue
        right = name.replace("_hemi-L", "_hemi-R", 1)
        if right not in names:
            continue
        run_id = run_id_of(entities)
        if run_id in surfaces:
            raise InputError(f"{func}: run {run_id} has several surface series for space {surface_space} "
                             f"({surfaces[run_id][0]} and {name}). Keep one of them in the derivatives folder "
                             "(data.surface_space fsaverage5 or fsaverage6 selects den-10k or den-41k).")
        surfaces[run_id] = (name, right, entities)
    return surfaces


def _surface_sidecar(func: str, names: set, left: str, run_id: str, bold: str | None) -> str:
    """The JSON that gives a surface run's TR: its own (21+), else the run's volumetric one, else any
    ``_bold.json`` of the same run (fMRIPrep 20.2 may write none beside the surfaces); the GIFTI
    ``TimeStep`` is the fallback of ``read_repetition_time``."""
    own = left[: -len(".func.gii")] + ".json"
    if own in names:
        return os.path.join(func, own)
    if bold is not None and Path(bold[: -len(".nii.gz")] + ".json").name in names:
        return bold[: -len(".nii.gz")] + ".json"
    for name in sorted(names):
        if name.endswith("_bold.json"):
            try:
                if run_id_of(parse_fmriprep_name(name)["entities"]) == run_id:
                    return os.path.join(func, name)
            except ValueError:
                continue
    return os.path.join(func, own)


def expected_names(*, kind: str, space: str, task: str, res: str | None = None, surface_space: str = "fsaverage5",
                   segmentations: list[str] | None = None) -> str:
    """The file names the configured input kind is looked for under, for messages."""
    if kind == "surface":
        density = _SURFACE_DENSITIES.get(surface_space)
        alias = f" (or space-{density[0]}_den-{density[1]})" if density else ""
        return (f"pairs of sub-*_task-{task}[_<entities>]_hemi-L/R_space-{surface_space}[_den-*]_bold.func.gii "
                f"(fMRIPrep 21+) or sub-*_task-{task}[_<entities>]_space-{surface_space}[_den-*]_hemi-L/R.func.gii "
                f"(fMRIPrep 20.2){alias}")
    if kind == "xcpd":
        return (f"sub-*_task-{task}[_<entities>]_space-{space}_seg-<seg>_stat-mean_timeseries.tsv for every seg "
                f"of {list(segmentations or [])}")
    resolution = f"_res-{res}" if res else "[_res-*]"
    return f"sub-*_task-{task}[_<entities>]_space-{space}{resolution}_desc-preproc_bold.nii.gz"


_SETTINGS_OF_KIND = {"volume": "data.space, data.res, data.task",
                     "surface": "data.surface_space, data.task",
                     "xcpd": "data.space, data.xcpd_segmentations, data.task"}


def no_runs_message(derivatives: str | Path, *, kind: str, space: str, task: str, res: str | None = None,
                    surface_space: str = "fsaverage5", segmentations: list[str] | None = None,
                    sessions: list[str] | None = None, runs: list[str] | None = None) -> str:
    """Why ``find_runs`` found nothing: the configured input kind, the names it looks for, what is there."""
    spaces: dict[str, set] = {"volume": set(), "surface": set(), "xcpd": set()}
    n_folders = 0
    for func in _func_dirs(Path(derivatives)):
        n_folders += 1
        for name in os.listdir(func):
            try:
                entities = parse_fmriprep_name(name)["entities"]
            except ValueError:
                continue
            label = f"task-{entities.get('task')} space-{entities.get('space')}"
            if name.endswith(_BOLD_SUFFIX):
                spaces["volume"].add(label + (f" res-{entities['res']}" if "res" in entities else ""))
            elif name.endswith(".func.gii"):
                spaces["surface"].add(label + (f" den-{entities['den']}" if "den" in entities else ""))
            elif name.endswith("_stat-mean_timeseries.tsv"):
                spaces["xcpd"].add(label + f" seg-{entities.get('seg')}")
    present = "; ".join(f"{what} runs with {', '.join(sorted(labels))}" for what, labels in spaces.items() if labels)
    filters = []
    if sessions is not None:
        filters.append(f"data.sessions {sessions}")
    if runs is not None:
        filters.append(f"data.runs {runs}")
    expected = expected_names(kind=kind, space=space, task=task, res=res, surface_space=surface_space,
                              segmentations=segmentations)
    return (f"No run in {derivatives} matches data.input: {kind}, which reads {expected}"
            f"{' with ' + ' and '.join(filters) if filters else ''}. "
            f"Found {n_folders} func folder(s){': ' + present if present else ', with no fMRIPrep BOLD series'}. "
            f"Check data.input, {_SETTINGS_OF_KIND[kind]}, data.sessions and data.runs.")


def read_json_sidecar(path: str | Path, *, fix: str) -> dict | None:
    """The parsed JSON sidecar at ``path``; None when there is none; an InputError naming it and ``fix`` if unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error}). {fix}") from None


def read_repetition_time(bold: str | Path, sidecar: str | Path, header_tr: float | None) -> float:
    """The run's TR: from the JSON sidecar, else from the NIfTI header; an error if they disagree.

    ``header_tr`` is the fourth zoom of the image header (``None`` or 0 when absent).
    """
    sidecar = Path(sidecar)
    header_tr = float(header_tr) if header_tr else None
    sidecar_tr = None
    payload = read_json_sidecar(sidecar, fix="Repair or remove the sidecar.")
    if payload is not None:
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

