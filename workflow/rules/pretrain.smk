# Pretraining: one job per run (objective-size, e.g. semantoks-tiny), pretraining-set size and seed.


wildcard_constraints:
    model=r"[a-z0-9]+-[a-z0-9]+",
    size=r"\d+",
    seed=r"\d+",


rule pretrain:
    input:
        shards="results/shards",
        splits="results/splits",
    output:
        encoder="results/pretrain/{model}/n-{size}_seed-{seed}/encoder.pt",
        log_csv="results/pretrain/{model}/n-{size}_seed-{seed}/log.csv",
        run="results/pretrain/{model}/n-{size}_seed-{seed}/run.yaml",
        figure=report("results/pretrain/{model}/n-{size}_seed-{seed}/loss.png",
                      caption="../report/pretrain_loss.rst", category="Pretraining",
                      labels={"model": "{model}", "subjects": "{size}", "seed": "{seed}"}),
    params:
        run=get_pretrain_run_spec,
        subjects=lambda wildcards: f"results/splits/pretrain_n-{wildcards.size}_seed-{wildcards.seed}.npy",
        processes=1 if config["pretrain"]["device"] == "cpu" else config["pretrain"]["gpus_per_job"],
    threads: config["pretrain"]["threads"]
    conda:
        "../../envs/brainscale.yaml"
    resources:
        # a scheduling token locally (--resources gpu=N), sbatch --gpus=N under the Slurm executor
        gpu=0 if config["pretrain"]["device"] == "cpu" else config["pretrain"]["gpus_per_job"],
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    wildcard_constraints:
        # only the configured runs: a checkpoint found elsewhere under results/pretrain is an input, never retrained
        model="|".join(RUNS),
        size="|".join(str(size) for size in config["splits"]["pretrain_sizes"]),
        seed="|".join(str(seed) for seed in config["splits"]["pretrain_seeds"]),
    log:
        "logs/pretrain/{model}_n-{size}_seed-{seed}.log",
    script:
        "../scripts/pretrain.py"


rule learning_curves:
    input:
        logs=get_pretraining_logs(),
    output:
        png=report(f"{STUDY_DIR}/figures/learning_curves.png", caption="../report/learning_curves.rst",
                   category="Pretraining", labels={"figure": "learning curves"}),
        pdf=f"{STUDY_DIR}/figures/learning_curves.pdf",
    params:
        runs=get_pretraining_log_keys(),
    conda:
        "../../envs/brainscale.yaml"
    log:
        f"logs/{STUDY}/figures/learning_curves.log",
    script:
        "../scripts/learning_curves.py"


rule loss_scaling:
    input:
        logs=get_pretraining_logs(),
        encoders=get_pretrained_encoders(),  # the parameters of each encoder: N of the N x D grid
        shards="results/shards",
        splits="results/splits",
    output:
        table=report(f"{STUDY_DIR}/tables/loss_scaling.tsv", caption="../report/loss_scaling_table.rst",
                     category="Scaling", labels={"figure": "held-out loss fits"}),
        points=f"{STUDY_DIR}/tables/loss_points.tsv",
        png=report(f"{STUDY_DIR}/figures/loss_scaling.png", caption="../report/loss_scaling.rst",
                   category="Scaling", labels={"figure": "held-out loss against data"}),
        pdf=f"{STUDY_DIR}/figures/loss_scaling.pdf",
    params:
        runs=get_pretraining_log_keys(),
        repetition_time=config["preprocess"]["target_tr"],
        bootstrap=config["study"]["bootstrap"],
        seed=config["study"]["seed"],
    conda:
        "../../envs/brainscale.yaml"
    log:
        f"logs/{STUDY}/figures/loss_scaling.log",
    script:
        "../scripts/loss_scaling.py"
