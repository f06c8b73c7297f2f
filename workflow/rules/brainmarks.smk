# The probe set as Brainmarks datasets (not in the default target: snakemake --cores all brainmarks_export).


rule brainmarks_export:
    input:
        shards="results/shards",
        splits="results/splits",
    output:
        directory("results/brainmarks"),
    params:
        tasks=config["probe"]["tasks"],
        labels=config["shards"]["labels"],
        proportions=config["splits"]["probe_proportions"],
        split_task=config["brainmarks"]["split_task"],
        split_seed=brainmarks_split_seed(),
        frames=config["brainmarks"]["frames"],
        repetition_time=config["preprocess"]["target_tr"],
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        "logs/brainmarks/brainmarks_export.log",
    script:
        "../scripts/brainmarks_export.py"


rule brainmarks_agreement:
    """Brainmarks' main_logistic and our probe on the export's split: its connectome against our FC, and
    each run's encoder (largest size, first seed) through the plugin against our probe of it (not in the
    default target)."""
    input:
        export="results/brainmarks",
        connectivity=f"{STUDY_DIR}/probes/baseline/connectivity/predictions.tsv.gz",
        encoder_predictions=[
            f"{STUDY_DIR}/probes/{source}/predictions.tsv.gz" for source in brainmarks_encoder_sources()
        ],
        encoders=[f"results/{source}/encoder.pt" for source in brainmarks_encoder_sources()],
    output:
        report(f"{STUDY_DIR}/tables/brainmarks_agreement.tsv", caption="../report/brainmarks_agreement.rst",
               category="Brainmarks", labels={"table": "agreement"}),
    params:
        sources=brainmarks_encoder_sources(),
        seed=config["study"]["seed"],
    threads: 2
    conda:
        "../../envs/brainscale.yaml"
    log:
        f"logs/{STUDY}/brainmarks/brainmarks_agreement.log",
    script:
        "../scripts/brainmarks_agreement.py"
