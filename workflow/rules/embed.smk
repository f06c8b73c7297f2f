# Frozen-encoder features of the probe subjects, and the features of the non-learned baselines.


wildcard_constraints:
    source=r"pretrain/[^/]+/n-\d+_seed-\d+|random/[^/]+_seed-\d+|external/[\w-]+",


rule random_init:
    input:
        shards="results/shards",
        splits="results/splits",
    output:
        "results/baselines/random/{model}_seed-{seed}/encoder.pt",
    params:
        run=get_run_spec,
        subjects=largest_subset(),
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/baselines/random_{model}_seed-{seed}.log",
    script:
        "../scripts/random_init.py"


rule embed:
    input:
        checkpoint=get_checkpoint,
        shards="results/shards",
        splits="results/splits",
    output:
        "results/embeddings/{source}/features.h5",
    params:
        settings=config["embed"],
        checkpoint=get_checkpoint_settings,
    threads: config["embed"]["threads"]
    conda:
        "../../envs/brainscale.yaml"
    resources:
        gpu=1 if config["embed"]["device"] == "cuda" else 0,
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        "logs/embed/{source}.log",
    script:
        "../scripts/embed.py"


rule connectivity_features:
    input:
        shards="results/shards",
        splits="results/splits",
    output:
        "results/embeddings/baseline/connectivity/features.h5",
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        "logs/embed/baseline_connectivity.log",
    script:
        "../scripts/connectivity_features.py"


rule oracle_features:
    input:
        simulation=lambda wildcards: get_simulation_output(),
        splits="results/splits",
    output:
        "results/embeddings/baseline/oracle/features.h5",
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/embed/baseline_oracle.log",
    script:
        "../scripts/oracle_features.py"
