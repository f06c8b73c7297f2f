# Linear probes of every source's features, the scaling figures, and the probe-only target.


rule probe:
    input:
        features="results/embeddings/{probe_source}/features.h5",
        shards="results/shards",
        latents=get_latent_labels,
    output:
        metrics="results/probes/{probe_source}/metrics.tsv",
        predictions="results/probes/{probe_source}/predictions.tsv.gz",
    params:
        # only what shapes a probe: listing another checkpoint must not rerun the others
        settings={key: config["probe"][key] for key in ("tasks", "split_seeds", "strengths", "layers", "cv_folds",
                                                        "subject_reid")},
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
        "logs/probe/{probe_source}.log",
    script:
        "../scripts/probe.py"


rule scaling_figure:
    input:
        metrics=probe_metrics(figure_sources()),
        encoders=get_pretrained_encoders(),  # steps, samples seen and passes of each export
    output:
        scaling_png=report("results/figures/scaling.png", caption="../report/scaling.rst", category="Scaling",
                           labels={"figure": "scaling curves"}),
        scaling_pdf="results/figures/scaling.pdf",
        layerwise_png=report("results/figures/layerwise.png", caption="../report/layerwise.rst",
                             category="Scaling", labels={"figure": "layer-wise probes"}),
        layerwise_pdf="results/figures/layerwise.pdf",
        objectives_png=report("results/figures/objectives.png", caption="../report/objectives.rst",
                              category="Scaling", labels={"figure": "objectives compared"}),
        objectives_pdf="results/figures/objectives.pdf",
        metrics="results/tables/probe_metrics.tsv",
        scaling=report("results/tables/scaling.tsv", caption="../report/scaling_table.rst", category="Scaling",
                       labels={"figure": "scaling table"}),
        power_law="results/tables/power_law.tsv",
        layerwise="results/tables/layerwise.tsv",
        objectives=report("results/tables/objectives.tsv", caption="../report/objectives_table.rst",
                          category="Scaling", labels={"figure": "objectives ranked"}),
    params:
        sources=figure_sources(),
        encoder_sources=pretrained_sources(),
        reference_model=RUNS[0],
    conda:
        "../../envs/brainscale.yaml"
    log:
        "logs/figures/scaling_figure.log",
    script:
        "../scripts/scaling_figure.py"


rule probe_all:
    """Probe every checkpoint under results/pretrain and in probe.checkpoints; redraw the figures."""
    input:
        probe_metrics(sorted(set(figure_sources() + found_pretrained_sources()))),
        FIGURE_OUTPUTS,
        TABLE_OUTPUTS,
