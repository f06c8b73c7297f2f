# Linear probes of every source's features, the scaling figures, and the probe-only target.


rule probe:
    input:
        features="results/embeddings/{probe_source}/features.h5",
        shards="results/shards",
        latents=get_latent_labels,
    output:
        metrics=f"{STUDY_DIR}/probes/{{probe_source}}/metrics.tsv",
        predictions=f"{STUDY_DIR}/probes/{{probe_source}}/predictions.tsv.gz",
    params:
        # only what shapes a probe: listing another checkpoint must not rerun the others
        settings={key: config["probe"][key] for key in ("tasks", "split_seeds", "strengths", "layers", "cv_folds",
                                                        "subject_reid", "selection")},
        proportions=config["splits"]["probe_proportions"],
        labels=config["shards"]["labels"],
    wildcard_constraints:
        probe_source=r"pretrain/[^/]+/n-\d+_seed-\d+|random/[^/]+_seed-\d+|external/[\w-]+|baseline/(connectivity|oracle)",
    threads: config["probe"]["threads"]
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        f"logs/{STUDY}/probe/{{probe_source}}.log",
    script:
        "../scripts/probe.py"


rule scaling_figure:
    input:
        metrics=probe_metrics(figure_sources()),
        encoders=get_pretrained_encoders(),  # steps, samples seen and passes of each export
        shards="results/shards",  # hours of data of each subset
        splits="results/splits",
    output:
        scaling_png=report(f"{STUDY_DIR}/figures/scaling.png", caption="../report/scaling.rst", category="Scaling",
                           labels={"figure": "scaling curves"}),
        scaling_pdf=f"{STUDY_DIR}/figures/scaling.pdf",
        layerwise_png=report(f"{STUDY_DIR}/figures/layerwise.png", caption="../report/layerwise.rst",
                             category="Scaling", labels={"figure": "layer-wise probes"}),
        layerwise_pdf=f"{STUDY_DIR}/figures/layerwise.pdf",
        objectives_png=report(f"{STUDY_DIR}/figures/objectives.png", caption="../report/objectives.rst",
                              category="Scaling", labels={"figure": "objectives compared"}),
        objectives_pdf=f"{STUDY_DIR}/figures/objectives.pdf",
        metrics=f"{STUDY_DIR}/tables/probe_metrics.tsv",
        scaling=report(f"{STUDY_DIR}/tables/scaling.tsv", caption="../report/scaling_table.rst", category="Scaling",
                       labels={"figure": "scaling table"}),
        probe_scaling=f"{STUDY_DIR}/tables/probe_scaling.tsv",
        layerwise=f"{STUDY_DIR}/tables/layerwise.tsv",
        objectives=report(f"{STUDY_DIR}/tables/objectives.tsv", caption="../report/objectives_table.rst",
                          category="Scaling", labels={"figure": "objectives ranked"}),
    params:
        sources=figure_sources(),
        encoder_sources=pretrained_sources(),
        reference_model=RUNS[0],
        repetition_time=config["preprocess"]["target_tr"],
        bootstrap=config["study"]["bootstrap"],
        seed=config["study"]["seed"],
    conda:
        "../../envs/brainscale.yaml"
    log:
        f"logs/{STUDY}/figures/scaling_figure.log",
    script:
        "../scripts/scaling_figure.py"


rule probe_all:
    """Probe every checkpoint under results/pretrain and in probe.checkpoints; redraw the figures."""
    input:
        probe_metrics(sorted(set(figure_sources() + found_pretrained_sources()))),
        FIGURE_OUTPUTS,
        TABLE_OUTPUTS,
