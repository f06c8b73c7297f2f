# fMRIPrep derivatives -> denoised, parcellated, TR-harmonised, band-passed, z-scored,
# network-ordered matrices, one per run, processed in batches of runs.


rule preprocess_batch:
    input:
        runs=get_batch_inputs,
        atlases=get_atlas_inputs,
        participants=get_participants_input,
    output:
        directory("results/preprocess/batch-{batch}"),
    params:
        runs=get_batch_runs,
        fingerprint=get_batch_fingerprint,
        atlases=INPUTS["atlases"],
        surface=INPUTS["surface"],
        settings=config["preprocess"],
        space=config["data"]["space"],
        phenotypes=config["data"]["phenotypes"],
        participants=INPUTS["participants"],
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    log:
        "logs/preprocess/batch-{batch}.log",
    script:
        "../scripts/preprocess_batch.py"


rule network_mapping:
    input:
        get_atlas_inputs,
    output:
        mapping="results/preprocess/network_mapping.npz",
        channels="results/preprocess/channels.tsv",
    params:
        atlases=INPUTS["atlases"],
        surface=INPUTS["surface"],
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/preprocess/network_mapping.log",
    script:
        "../scripts/network_mapping.py"


rule collect_phenotypes:
    input:
        get_participants_input,
    output:
        "results/preprocess/phenotypes.tsv",
    params:
        phenotypes=config["data"]["phenotypes"],
        participants=INPUTS["participants"],
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/preprocess/collect_phenotypes.log",
    script:
        "../scripts/collect_phenotypes.py"


rule qc_report:
    input:
        get_batch_folders,
    output:
        table="results/qc/runs.tsv",
        figure=report("results/qc/runs.png", caption="../report/qc_runs.rst", category="Quality control"),
    params:
        thresholds=config["preprocess"]["qc"],
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/preprocess/qc_report.log",
    script:
        "../scripts/qc_report.py"


rule cohort_card:
    input:
        batches=get_batch_folders,
        phenotypes="results/preprocess/phenotypes.tsv",
        participants=get_participants_input,
    output:
        table=report("results/qc/cohort_card.tsv", caption="../report/cohort_card.rst", category="Quality control"),
        markdown="results/qc/cohort_card.md",
    params:
        seed=config["splits"]["seed"],
        participants=INPUTS["participants"],
    threads: 2
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    log:
        "logs/preprocess/cohort_card.log",
    script:
        "../scripts/cohort_card.py"
