"""Write the synthetic dataset: fMRIPrep derivatives, atlases and ground truth.

Layout under ``output_dir``::

    fmriprep/                 BIDS derivatives exactly as fMRIPrep writes them
      dataset_description.json, participants.tsv, participants.json
      sub-<id>[/ses-<id>]/func/sub-<id>[_ses-<id>]_task-rest[_run-<n>]_space-MNI152NLin2009cAsym_res-<r>_...
          desc-preproc_bold.nii.gz + .json, desc-brain_mask.nii.gz,
          desc-confounds_timeseries.tsv + .json   (the last two without space/res)
    atlases/                  three label images on the BOLD grid + label tables (TSV)
    ground_truth/             latents.tsv, phenotype_model.json, subject_dynamics.npz, runs.tsv
    simulation.json           the configuration that produced it

The whole tree is written under a temporary name and renamed at the end, so a
killed run leaves no half-written dataset behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from isal import igzip
from threadpoolctl import threadpool_limits

from .. import __version__
from ..bids import build_bids_name
from ..io import atomic_directory
from .atlas import DemoAtlases, build_demo_atlases, label_table_colours
from .bold import build_voxel_model, framewise_displacement, simulate_motion, synthesise_bold
from .cohort import PHENOTYPE_MODEL, POPULATION_AGE, RunPlan, dynamics_traits, plan_runs, simulate_participants
from .confounds import FD_THRESHOLD_MM, confounds_table
from .dynamics import (AMPLITUDE_EFFECTS, COUPLING_EFFECTS, LATENTS, NETWORKS, Individuality, base_coupling,
                       individual_modes, network_signals, parcel_signals, spatial_smoothing, subject_dynamics)
from .layout import SPACE, demo_atlas_paths, resolution_label

__all__ = ["SPACE", "TASK", "simulate_dataset", "planted_parcel_signals", "run_stem", "demo_atlas_paths"]

TASK = "rest"
_MNI_SFORM_CODE = 4


def _json_dump(path: Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _tsv_dump(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.10g", lineterminator="\n")


def _numeric_tsv_dump(path: Path, table: pd.DataFrame) -> None:
    """:func:`_tsv_dump` of an all-float table, the same bytes, formatted a row at a time (pandas formats
    value by value, a tenth of a run's simulation time for the confounds)."""
    row_format = "\t".join(["%.10g"] * table.shape[1])
    lines = ["\t".join(table.columns)]
    for row in table.to_numpy(dtype=np.float64):
        lines.append(row_format % tuple(row))
    text = "\n".join(lines) + "\n"
    path.write_text(_NAN_FIELD.sub("n/a", text))


_NAN_FIELD = re.compile(r"(?<![^\t\n])nan(?![^\t\n])")


def run_stem(plan: RunPlan) -> dict:
    """BIDS entities shared by the files of one run."""
    return {"sub": plan.participant_id.removeprefix("sub-"), "ses": plan.session, "task": TASK, "run": plan.run}


def _write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray, repetition_time: float | None = None) -> None:
    image = nib.Nifti1Image(volume, affine)
    image.header.set_sform(affine, code=_MNI_SFORM_CODE)
    image.header.set_qform(affine, code=_MNI_SFORM_CODE)
    image.header.set_xyzt_units("mm", "sec")
    if repetition_time is not None:
        zooms = image.header.get_zooms()
        image.header.set_zooms(zooms[:3] + (repetition_time,))
    # ISA-L's gzip, four times faster than zlib at the same ratio (compression was a third of the
    # simulation's time); mtime 0 keeps the bytes reproducible.
    path.write_bytes(igzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _write_atlases(atlases: DemoAtlases, root: Path, resolution_mm: float) -> None:
    (root / "atlases").mkdir()
    paths = demo_atlas_paths(root, resolution_mm)
    specs = [(atlases.cortical, atlases.cortical_names, "cortical"),
             (atlases.subcortical, atlases.subcortical_names, "subcortical"),
             (atlases.cerebellar, atlases.cerebellar_names, "cerebellar")]
    for labels, names, kind in specs:
        _write_nifti(Path(paths[kind]["image"]), labels.astype(np.int16), atlases.affine)
        table = pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names,
                              "color": label_table_colours(names, kind)})
        _tsv_dump(Path(paths[kind]["labels"]), table)


def planted_parcel_signals(seed: int, subject_index: int, visit_index: int, traits: np.ndarray, n_volumes: int,
                           repetition_time: float, effect_size: float, network_of_parcel: np.ndarray,
                           individuality: Individuality | None = None,
                           smoothing: np.ndarray | None = None) -> np.ndarray:
    """(n_volumes, n_parcels) noise-free parcel signals of one run, before any voxel or nuisance.

    ``traits`` are the subject's (:func:`~.cohort.dynamics_traits`). Loadings, the individual modes'
    maps and the own processes' time constant belong to the subject (the same in every run); the
    signals, and the state share of the maps, to the run.
    ``smoothing`` (:func:`~.dynamics.spatial_smoothing` of the parcel centres) is required when
    ``individuality`` has modes.
    """
    individuality = individuality or Individuality()
    subject_rng = np.random.default_rng([seed, 2, subject_index])
    loadings = subject_rng.uniform(0.5, 0.9, len(network_of_parcel))
    rng = np.random.default_rng([seed, 3, subject_index, visit_index])
    dynamics = subject_dynamics(traits, effect_size)
    networks = network_signals(rng, dynamics, n_volumes, repetition_time)
    own_time_constant = dynamics.time_constant_s
    modes = None
    if individuality.modes:
        if smoothing is None:
            raise ValueError("planted_parcel_signals: individuality with modes needs the parcels' smoothing factor")
        own_time_constant *= float(np.exp(individuality.spectrum_sd * subject_rng.standard_normal()))
        modes = individual_modes(subject_rng, np.random.default_rng([seed, 5, subject_index, visit_index]),
                                 smoothing, individuality, n_volumes, repetition_time, own_time_constant)
    return parcel_signals(rng, networks, network_of_parcel, loadings, repetition_time, own_time_constant,
                          modes, individuality.share)


# Per-process state of the run workers, set once by _init_worker.
_WORKER: dict = {}


def _init_worker(atlases: DemoAtlases, settings: dict) -> None:
    _WORKER["atlases"] = atlases
    _WORKER["settings"] = settings
    _WORKER["network_of_parcel"] = atlases.network_of_parcel()
    _WORKER["mask_fortran_index"] = np.ravel_multi_index(np.nonzero(atlases.brain_mask), atlases.shape, order="F")
    _WORKER["individuality"] = Individuality(**settings["individuality"])
    _WORKER["smoothing"] = spatial_smoothing(atlases.parcel_centroids(), settings["individuality"]["smoothness_mm"])


def _fortran_volume(values: np.ndarray, fortran_index: np.ndarray, shape: tuple) -> np.ndarray:
    """(X, Y, Z, T) Fortran-ordered volume, zero outside the mask, from (T, V) in-mask ``values``.

    NIfTI stores voxels x fastest: a Fortran-ordered array is written in one piece (a C-ordered one
    volume by volume, twice as slow). ``fortran_index`` is each in-mask voxel's Fortran flat index.
    """
    flat = np.zeros((values.shape[0], int(np.prod(shape))), dtype=values.dtype)
    flat[:, fortran_index] = values
    return flat.reshape((values.shape[0],) + tuple(shape)[::-1]).T


def _simulate_run(task: tuple) -> dict:
    """Simulate and write every file of one run; return its ground-truth summary.

    One BLAS thread per run, whatever n_jobs: multithreaded reductions round differently, and the
    bytes written must not depend on the worker count.
    """
    with threadpool_limits(limits=1):
        return _simulate_run_single_threaded(task)


def _simulate_run_single_threaded(task: tuple) -> dict:
    plan, traits, visit_index, func_dir = task
    atlases: DemoAtlases = _WORKER["atlases"]
    settings = _WORKER["settings"]
    seed = settings["seed"]
    network_of_parcel = _WORKER["network_of_parcel"]

    parcels = planted_parcel_signals(seed, plan.subject_index, visit_index, traits, plan.n_volumes,
                                     plan.repetition_time, settings["effect_size"], network_of_parcel,
                                     _WORKER["individuality"], _WORKER["smoothing"])
    rng = np.random.default_rng([seed, 4, plan.subject_index, visit_index])
    motion = simulate_motion(rng, plan.n_volumes, plan.repetition_time, plan.high_motion)
    voxel_model = build_voxel_model(rng, atlases)
    intensity = synthesise_bold(rng, voxel_model, parcels, motion, plan.repetition_time, plan.dummy_scans)
    tissue = atlases.tissue[atlases.brain_mask]
    confounds, confounds_description = confounds_table(
        intensity, tissue, motion, plan.repetition_time, plan.dummy_scans,
        tissue_codes={"csf": DemoAtlases.TISSUE_CSF, "wm": DemoAtlases.TISSUE_WM})

    func_dir = Path(func_dir)
    func_dir.mkdir(parents=True, exist_ok=True)
    entities = run_stem(plan)
    spatial = dict(entities, space=SPACE, res=settings["res_label"])
    if settings["bold_dtype"] == "int16":
        intensity = np.clip(np.rint(intensity), 0, np.iinfo(np.int16).max).astype(np.int16)
    volume = _fortran_volume(intensity, _WORKER["mask_fortran_index"], atlases.shape)
    bold_name = build_bids_name(dict(spatial, desc="preproc"), "bold", ".nii.gz")
    _write_nifti(func_dir / bold_name, volume, atlases.affine, plan.repetition_time)
    _json_dump(func_dir / build_bids_name(dict(spatial, desc="preproc"), "bold", ".json"), {
        "RepetitionTime": plan.repetition_time, "TaskName": TASK, "SkullStripped": False,
        "StartTime": 0.0, "SliceTimingCorrected": False,
    })
    _write_nifti(func_dir / build_bids_name(dict(spatial, desc="brain"), "mask", ".nii.gz"),
                 atlases.brain_mask.astype(np.uint8), atlases.affine)
    _numeric_tsv_dump(func_dir / build_bids_name(dict(entities, desc="confounds"), "timeseries", ".tsv"), confounds)
    _json_dump(func_dir / build_bids_name(dict(entities, desc="confounds"), "timeseries", ".json"),
               confounds_description)
    if settings["save_parcel_signals"]:
        np.save(func_dir / build_bids_name(dict(entities, desc="groundtruth"), "parcels", ".npy"),
                parcels.astype(np.float32))

    fd = framewise_displacement(motion)[1:]
    return {
        "bold": str((func_dir / bold_name).relative_to(settings["fmriprep_dir"])),
        "participant_id": plan.participant_id, "session": plan.session or "n/a", "run": plan.run or "n/a",
        "site": plan.site, "repetition_time": plan.repetition_time, "n_volumes": plan.n_volumes,
        "dummy_scans": plan.dummy_scans, "high_motion": plan.high_motion, "short": plan.short,
        "mean_fd": float(fd.mean()), "fraction_fd_above_threshold": float((fd > FD_THRESHOLD_MM).mean()),
    }


def _dataset_description() -> dict:
    return {
        "Name": "brainscale synthetic resting-state derivatives (fMRIPrep layout)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainscale-simulate", "Version": __version__,
                         "Description": "Synthetic fMRIPrep-style derivatives with known ground truth"}],
        "HowToAcknowledge": "Synthetic data; no participant was scanned.",
    }


_PARTICIPANTS_SIDECAR = {
    "participant_id": {"Description": "Participant label"},
    "age": {"Description": "Age at scan", "Units": "year"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "site": {"Description": "Acquisition site"},
    "fluid_intelligence": {"Description": "Fluid intelligence score (population mean 100, SD 15)"},
}


def _write_ground_truth(folder: Path, participants: pd.DataFrame, latents: np.ndarray, traits: np.ndarray,
                        runs: list[dict], settings: dict) -> None:
    folder.mkdir()
    latent_table = pd.DataFrame(latents, columns=[f"latent_{name}" for name in LATENTS])
    latent_table.insert(0, "participant_id", participants["participant_id"])
    _tsv_dump(folder / "latents.tsv", latent_table)
    effect_size = settings["effect_size"]
    dynamics = [subject_dynamics(row, effect_size) for row in traits]
    np.savez_compressed(
        folder / "subject_dynamics.npz",
        participant_id=participants["participant_id"].to_numpy(dtype=str),
        networks=np.array(NETWORKS), coupling=np.stack([d.coupling for d in dynamics]),
        amplitude=np.stack([d.amplitude for d in dynamics]),
        time_constant_s=np.array([d.time_constant_s for d in dynamics]),
        traits=traits, trait_names=np.array(LATENTS),
    )
    _json_dump(folder / "phenotype_model.json", {
        "latents": list(LATENTS),
        "phenotypes": PHENOTYPE_MODEL,
        "effect_size_per_sd": effect_size,
        "networks": list(NETWORKS),
        "base_coupling": base_coupling().round(4).tolist(),
        "coupling_effects": {k: [list(p) for p in v] for k, v in COUPLING_EFFECTS.items()},
        "amplitude_effects": {k: [list(p) for p in v] for k, v in AMPLITUDE_EFFECTS.items()},
        "time_constant": "1.5 s * exp(0.15 * age trait)",
        "age_trait": f"(site age_mean + site age_sd * latent_age - {POPULATION_AGE['mean']:g}) / "
                     f"{POPULATION_AGE['sd']:g}: the expected age on one scale for every site (traits in "
                     "subject_dynamics.npz)",
        "individuality": settings["individuality"],
        "note": "Phenotypes are drawn from the latents with the noise above; the traits (the latents, with age "
                "on one scale for every site) set the coupling, amplitude and time constant of the network "
                "dynamics. Beside them every subject has fine-scale modes with its own spatial maps "
                "(individuality), unrelated to any phenotype. The oracle predicts each phenotype from the "
                "latents and the site.",
    })
    _tsv_dump(folder / "runs.tsv", pd.DataFrame(runs))


def simulate_dataset(settings: dict, output_dir: str | Path, *, n_jobs: int = 1, overwrite: bool = False,
                     log=print) -> pd.DataFrame:
    """Generate the synthetic fMRIPrep derivatives dataset.

    Parameters
    ----------
    settings : dict
        The validated ``simulate`` section of the configuration.
    output_dir : str or Path
        Destination; written atomically (see module docstring).
    n_jobs : int, default=1
        Worker processes. The output does not depend on it.
    overwrite : bool, default=False
        Replace an existing ``output_dir``.
    log : callable
        Receives progress lines.

    Returns
    -------
    pandas.DataFrame
        One row per run (the ground-truth run table).
    """
    n_jobs = _worker_count(n_jobs)
    started = time.perf_counter()
    seed = settings["seed"]
    sites = settings["sites"]
    atlases = build_demo_atlases(settings["resolution_mm"], seed)
    participants, latents = simulate_participants(settings["n_subjects"], sites, seed,
                                                  settings["missing_score_fraction"])
    plans = plan_runs(participants, sites, seed, settings["second_visit_fraction"],
                      settings["high_motion_fraction"], settings["short_run_fraction"])
    log(f"simulating {len(participants)} subjects, {len(plans)} runs at {settings['resolution_mm']} mm "
        f"with {n_jobs} worker(s)")

    with atomic_directory(output_dir, overwrite=overwrite) as root:
        fmriprep = root / "fmriprep"
        _write_dataset_files(fmriprep, participants)
        _write_atlases(atlases, root, settings["resolution_mm"])
        worker_settings = dict(settings, res_label=resolution_label(settings["resolution_mm"]),
                               fmriprep_dir=str(fmriprep))
        traits = dynamics_traits(latents, participants, sites)
        runs = _simulate_runs(_run_tasks(plans, traits, fmriprep), atlases, worker_settings, n_jobs)
        _write_ground_truth(root / "ground_truth", participants, latents, traits, runs, settings)
        _json_dump(root / "simulation.json", {"simulate": settings, "brainscale_version": __version__})
    log(f"wrote {output_dir} in {time.perf_counter() - started:.1f} s (pid {os.getpid()})")
    return pd.DataFrame(runs)


def _worker_count(n_jobs: int) -> int:
    """The worker processes to start: ``n_jobs``, at most one per usable core."""
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be at least 1, received {n_jobs}")
    return min(n_jobs, len(os.sched_getaffinity(0)))  # more workers than cores only adds overhead


def _write_dataset_files(fmriprep: Path, participants: pd.DataFrame) -> None:
    """Create the fMRIPrep folder with its dataset description and participants table and sidecar."""
    fmriprep.mkdir()
    _json_dump(fmriprep / "dataset_description.json", _dataset_description())
    _tsv_dump(fmriprep / "participants.tsv", participants)
    _json_dump(fmriprep / "participants.json", _PARTICIPANTS_SIDECAR)


def _run_tasks(plans: list[RunPlan], traits: np.ndarray, fmriprep: Path) -> list[tuple]:
    """One ``_simulate_run`` task per plan: (plan, subject's dynamics traits, visit index, func folder)."""
    visits: dict = {}
    tasks = []
    for plan in plans:
        # The n-th run of a participant is its visit n: it seeds the run's signals.
        visit_index = visits[plan.participant_id] = visits.get(plan.participant_id, -1) + 1
        func_dir = fmriprep / plan.participant_id
        if plan.session:
            func_dir = func_dir / f"ses-{plan.session}"
        tasks.append((plan, traits[plan.subject_index], visit_index, str(func_dir / "func")))
    return tasks


def _simulate_runs(tasks: list[tuple], atlases: DemoAtlases, worker_settings: dict, n_jobs: int) -> list[dict]:
    """Run ``_simulate_run`` on every task, in this process or in ``n_jobs`` workers; summaries in task order."""
    if n_jobs == 1:
        _init_worker(atlases, worker_settings)
        return [_simulate_run(task) for task in tasks]
    with ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker,
                             initargs=(atlases, worker_settings)) as pool:
        return list(pool.map(_simulate_run, tasks, chunksize=4))
