# Network-ordered HDF5 shards in the Brain-Semantoks layout, and subject-level splits.


rule build_shards:
    input:
        batches=get_batch_folders,
        phenotypes="results/preprocess/phenotypes.tsv",
        network_mapping="results/preprocess/network_mapping.npz",
    output:
        directory("results/shards"),
    params:
        settings=config["shards"],
        # only the sections that shape the shards: a probe or pretraining setting must not rebuild them
        config={key: config[key] for key in ("data", "atlases", "preprocess", "shards")},
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        "logs/shards/build_shards.log",
    script:
        "../scripts/build_shards.py"


rule make_splits:
    input:
        "results/shards",
    output:
        directory("results/splits"),
    params:
        settings=config["splits"],
        labels=list(config["shards"]["labels"]),
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/shards/make_splits.log",
    script:
        "../scripts/make_splits.py"
