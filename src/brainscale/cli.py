"""The ``brainscale`` command line: one subcommand per workflow stage."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import load_config, validate_config
from .errors import BrainscaleError, ConfigError


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate_dataset

    config = load_config(args.config) if args.config else validate_config({})
    settings = config["simulate"]
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.n_subjects is not None:
        settings["n_subjects"] = args.n_subjects
    settings = validate_config({"simulate": settings}, workflow=False)["simulate"]
    output = Path(args.output or settings["output_dir"])
    simulate_dataset(settings, output, n_jobs=args.jobs, overwrite=args.overwrite,
                     log=lambda line: print(line, file=sys.stderr))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .shards.reader import verify_shards

    problems = verify_shards(args.folder)
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{args.folder}: every shard matches its manifest")
    return 1 if problems else 0


def _pretrain(args: argparse.Namespace) -> int:
    import numpy as np

    from .objectives import RunSpec, run_spec
    from .objectives.spec import RUN_FILE
    from .training.evaluation import run_evaluation_subjects
    from .training.loop import pretrain

    if args.spec:
        if args.config or args.objective:
            raise ConfigError("brainscale pretrain: give --spec, or --config (and --objective), not both.")
        run = RunSpec.read(args.spec)
    else:
        run = run_spec((load_config(args.config) if args.config else validate_config({}))["pretrain"], args.objective)
        if int(os.environ.get("RANK", "0")) == 0:  # beside the run, as the pretrain rule writes it
            run.write(Path(args.output) / RUN_FILE)
    subjects = np.load(args.subjects).astype(str)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    pretrain(run, args.shards, subjects, args.output, evaluation_subjects=run_evaluation_subjects(run, args.splits, log),
             log=log)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainscale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    simulate = commands.add_parser(
        "simulate", help="write the synthetic fMRIPrep derivatives dataset (the demo input)",
        description="Write a synthetic fMRIPrep derivatives dataset with atlases and ground truth.")
    simulate.add_argument("--config", help="workflow YAML config; its 'simulate' section is used "
                                           "(default: the schema defaults)")
    simulate.add_argument("--output", help="destination folder (default: simulate.output_dir)")
    simulate.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    simulate.add_argument("--seed", type=int, help="override simulate.seed")
    simulate.add_argument("--n-subjects", type=int, help="override simulate.n_subjects")
    simulate.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    simulate.set_defaults(handler=_simulate)
    verify = commands.add_parser("verify", help="check shards against their manifest's SHA-256 checksums",
                                 description="Check every shard of a folder against manifest.json.")
    verify.add_argument("folder", help="the shards folder (results/shards)")
    verify.set_defaults(handler=_verify)
    pretrain = commands.add_parser(
        "pretrain", help="pretrain one objective on one subset (under torchrun: data parallel)",
        description="Pretrain on one subset of subjects; run it under torchrun for several processes/GPUs.")
    pretrain.add_argument("--spec", help="a run specification (the run.yaml the pretrain rule writes beside a run)")
    pretrain.add_argument("--config", help="or a workflow YAML config; its 'pretrain' section is used")
    pretrain.add_argument("--shards", required=True, help="the shards folder (results/shards)")
    pretrain.add_argument("--subjects", required=True, help=".npy list of subject ids (a split file)")
    pretrain.add_argument("--output", required=True, help="output folder (checkpoint, log, encoder.pt)")
    pretrain.add_argument("--splits", help="the splits folder (results/splits): the held-out loss is scored on "
                                           "probe subjects drawn from it (pretrain.evaluation)")
    # not --run: torchrun, which passes these arguments on, would take it for its --run-path
    pretrain.add_argument("--objective", help="the run, objective-size, e.g. jepa-tiny (default: the first of "
                                              "pretrain.objectives)")
    pretrain.set_defaults(handler=_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (BrainscaleError, FileExistsError) as exc:
        print(f"brainscale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
