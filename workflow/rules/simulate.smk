# The embedded demo input: synthetic fMRIPrep derivatives, atlases and ground truth.


checkpoint simulate_derivatives:
    output:
        directory(config["simulate"]["output_dir"]),
    params:
        settings=config["simulate"],
    threads: 8
    conda:
        "../../envs/brainscale.yaml"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    log:
        "logs/simulate/simulate_derivatives.log",
    script:
        "../scripts/simulate_derivatives.py"
