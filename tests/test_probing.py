"""Embeddings, their cache, checkpoints of every origin, probes, metrics and the scaling outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

from brainscale.config import ConfigError, validate_config
from brainscale.models.config import reference_network_map
from brainscale.objectives import run_spec
from brainscale.objectives.base import PretrainingData, network_map_of
from brainscale.objectives.semantoks.model import SemantoksEncoder
from brainscale.objectives.semantoks.spec import MODEL_SIZES, SemantoksConfig
from brainscale.probing import embeddings
from brainscale.probing.baselines import connectivity_features, fisher_z_connectivity
from brainscale.probing.checkpoints import CheckpointError, load_checkpoint, write_random_encoder
from brainscale.probing.embeddings import (FeatureTable, embed_checkpoint, extract_embeddings, probe_dataset,
                                           probe_subjects, read_features)
from brainscale.probing.probes import (ProbeError, classification_metrics, probe_features, probe_one,
                                       regression_metrics, resolve_tasks, split_probe_subjects)
from brainscale.probing.scaling import final_scores, write_scaling_outputs
from brainscale.shards.reader import shard_paths, subjects_from_shards
from brainscale.shards.splits import write_splits
from brainscale.export import save_encoder

LABELS = validate_config({})["shards"]["labels"]
GRID = validate_config({})["probe"]["strengths"]
EMBED = dict(validate_config({})["embed"], batch_size=16)
TINY = run_spec(validate_config({})["pretrain"], "semantoks-tiny")


@pytest.fixture(scope="module")
def splits(shards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("splits") / "splits"
    subjects = subjects_from_shards(shard_paths(shards), labels=list(LABELS))
    settings = dict(validate_config({})["splits"], probe_fraction=0.67, probe_proportions=[1, 1, 1], stratify=None,
                    pretrain_sizes=[2])
    write_splits(subjects, settings, folder)
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(shards, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "encoder.pt"
    write_random_encoder(TINY, PretrainingData(shards, (), 0), seed=3, path=path)
    return path


# --- metrics --------------------------------------------------------------------------------
def test_metrics_equal_scikit_learn_on_known_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    scores = rng.normal(size=40) + y
    metrics = classification_metrics(y, scores, np.array([0, 1]))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (scores > 0).astype(int)))
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, scores))
    three = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + np.eye(3)[three]
    multi = classification_metrics(three, logits, np.array([0, 1, 2]))
    assert multi["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(three, logits.argmax(1)))
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert multi["auroc"] == pytest.approx(roc_auc_score(three, softmax, multi_class="ovr"))
    target = rng.normal(50, 10, 30)
    predicted = target + rng.normal(0, 5, 30)
    regression = regression_metrics(target, predicted)
    assert regression["r2"] == pytest.approx(r2_score(target, predicted))
    assert regression["mae"] == pytest.approx(mean_absolute_error(target, predicted))
    assert regression["pearson_r"] == pytest.approx(pearsonr(target, predicted)[0])
    assert np.isnan(regression_metrics(target, np.full(30, 50.0))["pearson_r"])
    assert np.isnan(classification_metrics(np.ones(5, int), np.ones(5), np.array([0, 1]))["auroc"])


# --- splits ---------------------------------------------------------------------------------
def test_repeated_splits_are_disjoint_and_never_seen_in_pretraining(splits):
    probe = set(probe_subjects(splits))
    pretraining = set(np.load(splits / "pretrain_pool.npy").astype(str))
    assert probe and not probe & pretraining
    subjects = [f"sub-{i:02d}" for i in range(30)]
    labels = pd.Series([float(i % 3 == 0) for i in range(30)], index=subjects)
    seen = []
    for seed in range(4):
        parts = split_probe_subjects(labels, "classification", [0.6, 0.2, 0.2], seed)
        train, val, test = (set(parts[name]) for name in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)
        assert train | val | test == set(subjects)
        assert labels[list(train)].mean() == pytest.approx(labels.mean(), abs=0.05)  # stratified
        seen.append(tuple(sorted(test)))
    assert len(set(seen)) > 1  # the seeds draw different splits


# --- probes ---------------------------------------------------------------------------------
def planted(n_subjects=60, rows_per_subject=4, seed=0):
    """Rows (crops) of subjects whose label is carried by feature 0 plus crop noise."""
    rng = np.random.default_rng(seed)
    subjects = np.array([f"sub-{i:03d}" for i in range(n_subjects)])
    trait = rng.normal(size=n_subjects)
    rows = np.repeat(np.arange(n_subjects), rows_per_subject)
    features = rng.normal(size=(len(rows), 12))
    features[:, 0] += 2 * trait[rows]
    labels = pd.DataFrame({"sex_bi": (trait > 0).astype(float), "age": 40 + 10 * trait}, index=subjects)
    return FeatureTable(subjects[rows], {"cls": features[:, None], "mean": features[:, None] * 0.5}), labels


def test_probes_find_a_planted_signal_and_save_subject_predictions():
    table, labels = planted()
    tasks = resolve_tasks(None, {"sex_bi": LABELS["sex_bi"], "age": LABELS["age"]})
    metrics, predictions = probe_features(table, labels, tasks, split_seeds=[0, 1], proportions=[0.6, 0.2, 0.2],
                                          grid=[1e-3, 0.1, 10])
    best = metrics[metrics["feature"] == "cls_avg"].groupby("task")[["balanced_accuracy", "r2", "pearson_r"]].mean()
    assert best.loc["sex_bi", "balanced_accuracy"] > 0.8
    assert best.loc["age", "r2"] > 0.6 and best.loc["age", "pearson_r"] > 0.8
    assert set(metrics["feature"]) == {"cls", "mean", "cls_avg"} and set(metrics["split_seed"]) == {0, 1, -1}
    # One prediction per subject and part: crops are averaged, never scored one by one. The train and
    # val subjects get out-of-fold predictions (part cv), the test subjects those of the refitted model.
    one = predictions[(predictions["task"] == "age") & (predictions["feature"] == "cls") &
                      (predictions["split_seed"] == 0)]
    assert not one.duplicated(["part", "subject"]).any()
    assert set(one["part"]) == {"cv", "test"} and len(one) == 60 and (one["part"] == "test").sum() == 12
    assert not set(one.loc[one["part"] == "cv", "subject"]) & set(one.loc[one["part"] == "test", "subject"])
    # No run identity in these rows: subject_reid is NaN (skipped), one row per feature and layer.
    reid = metrics[metrics["task"] == "subject_reid"]
    assert len(reid) == 3 and reid["top1"].isna().all() and (reid["split_seed"] == -1).all()
    assert np.allclose(one["y_true"], labels.loc[one["subject"], "age"])


def test_strength_is_chosen_by_cross_validation_without_the_test_subjects():
    table, labels = planted(seed=1)
    split = split_probe_subjects(labels["age"], "regression", [0.6, 0.2, 0.2], 0)
    # A strength so high that the probe predicts the mean: never preferred over a fitting one.
    metrics, predictions = probe_one(table.matrix("cls"), table.subjects, labels["age"], split, "regression",
                                     [100.0, 1e-3])
    assert metrics["strength"] == 1e-3 and metrics["val_score"] > 0.5
    at_mean, _ = probe_one(table.matrix("cls"), table.subjects, labels["age"], split, "regression", [100.0])
    assert abs(at_mean["r2"]) < 0.1 and at_mean["pearson_r"] > 0.5  # shrunk to the mean, still ordered
    # The choice never looks at the test subjects: scrambling their labels changes nothing but the score.
    scrambled = labels["age"].copy()
    scrambled[split["test"]] = scrambled[split["test"]].to_numpy()[::-1]
    again, _ = probe_one(table.matrix("cls"), table.subjects, scrambled, split, "regression", [100.0, 1e-3])
    assert again["strength"] == metrics["strength"] and again["val_score"] == metrics["val_score"]


def test_probes_equal_scikit_learn_ridge_and_logistic_regression():
    """The row-space projection and the closed-form ridge are exact, also for wide features."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    from brainscale.probing.probes import LinearProbe

    rng = np.random.default_rng(3)
    for rows, dim in ((90, 20), (30, 400)):
        features, new = rng.normal(size=(rows, dim)), rng.normal(size=(7, dim))
        features[:, :4] *= 5
        y = features[:, 0] + rng.normal(size=rows)
        probe = LinearProbe(kind="regression", strengths=[0.01, 1.0]).fit(features, y)
        scaler = StandardScaler().fit(features)
        for strength, output in zip(probe.strengths, probe.outputs(new)):
            ridge = Ridge(alpha=strength * probe.gram_top_).fit(scaler.transform(features), (y - y.mean()) / y.std())
            assert np.allclose(output, ridge.predict(scaler.transform(new)) * y.std() + y.mean(), atol=1e-8)
        classes = (y > 0).astype(int)
        probe = LinearProbe(kind="classification", strengths=[0.01]).fit(features, classes)
        logistic = LogisticRegression(C=1 / (0.01 * probe.gram_top_), max_iter=5000, tol=1e-10)
        logistic.fit(scaler.transform(features), classes)
        reference = logistic.decision_function(scaler.transform(new))
        assert np.allclose(probe.outputs(new)[0], reference, atol=1e-3 * np.abs(reference).max())


def test_probes_of_pure_noise_score_chance_on_average():
    """Noise features of a realistic shape: R2 about 0 (not the -0.2 of an unshrunk, val-overfitted ridge on a
    shifted split), balanced accuracy about 0.5."""
    rng = np.random.default_rng(0)
    subjects = np.array([f"sub-{i:03d}" for i in range(75)])
    rows = np.repeat(np.arange(75), 8)
    r2, accuracy = [], []
    for seed in range(12):
        features = rng.normal(size=(len(rows), 128)) + 0.5 * rng.normal(size=(75, 128))[rows]  # subject structure
        features[:, :64] += 2 * rng.normal(size=(len(rows), 1))  # a highly collinear block
        # a skewed, clustered target (site-driven ages: three modes)
        age = pd.Series(rng.choice([30.0, 45.0, 62.0], 75) + rng.normal(0, 8, 75), index=subjects)
        sex = pd.Series((rng.random(75) < 0.5).astype(int), index=subjects)
        split = split_probe_subjects(age, "regression", [0.6, 0.2, 0.2], seed)
        r2.append(probe_one(features, subjects[rows], age, split, "regression", GRID, seed=seed)[0]["r2"])
        split = split_probe_subjects(sex, "classification", [0.6, 0.2, 0.2], seed)
        accuracy.append(probe_one(features, subjects[rows], sex, split, "classification", GRID,
                                  seed=seed)[0]["balanced_accuracy"])
    assert -0.05 < np.mean(r2) < 0.05, r2
    assert 0.44 < np.mean(accuracy) < 0.56, accuracy


def test_continuous_splits_keep_the_target_distribution():
    rng = np.random.default_rng(1)
    age = pd.Series(rng.choice([30.0, 45.0, 62.0], 75) + rng.normal(0, 8, 75),
                    index=[f"sub-{i:03d}" for i in range(75)])
    shifts = []
    for seed in range(20):
        parts = split_probe_subjects(age, "regression", [0.6, 0.2, 0.2], seed)
        assert sorted(np.concatenate(list(parts.values()))) == sorted(age.index)
        assert [len(parts[name]) for name in ("train", "val", "test")] == [45, 15, 15]
        shifts.append(age[parts["test"]].mean() - age[parts["train"]].mean())
    # sorted blocks of 5 (3 train, 1 val, 1 test): the test mean stays within 1.5 years of the training mean
    assert np.abs(shifts).max() < 1.5 * age.std() / 10, shifts


def test_bad_tasks_and_labels_are_clear_errors():
    table, labels = planted()
    with pytest.raises(ProbeError, match="probe task 'motion'.*not among the shard labels"):
        resolve_tasks({"motion": {"label": "fd"}}, LABELS)
    tasks = resolve_tasks({"sex": {"label": "sex_bi"}}, LABELS)
    with pytest.raises(ProbeError, match="probe task 'sex'.*absent from the shards.*shards.labels"):
        probe_features(table, labels.drop(columns="sex_bi"), tasks, split_seeds=[0], proportions=[1, 1, 1],
                       grid=[1.0])
    one_class = labels.assign(sex_bi=1.0)
    with pytest.raises(ProbeError, match="probe task 'sex'.*single class"):
        probe_features(table, one_class, tasks, split_seeds=[0], proportions=[1, 1, 1], grid=[1.0])
    with pytest.raises(ConfigError, match="probe.tasks.iq.label.*not a shard label"):
        validate_config({"probe": {"tasks": {"iq": {"label": "iq"}}}})
    with pytest.raises(ProbeError, match="probe task 'subject_reid'.*reserved"):
        resolve_tasks({"subject_reid": {"label": "age"}}, LABELS)
    with pytest.raises(ConfigError, match="probe.strengths.*maximum"):  # an old absolute grid
        validate_config({"probe": {"strengths": [1.0, 1e5]}})


# --- embeddings -----------------------------------------------------------------------------
def test_extraction_equals_the_encoder_on_each_evaluation_crop(shards, splits, tiny_checkpoint):
    encoder = load_checkpoint(tiny_checkpoint, network_map_of(shards))
    dataset = probe_dataset(shards, splits, n_crops=8)
    table = extract_embeddings(encoder, dataset, batch_size=7)
    assert table.features["cls"].shape == (len(dataset.runs) * 8, encoder.config.depth, encoder.config.width)
    assert set(table.subjects) == set(probe_subjects(splits))
    with torch.no_grad():
        for item in (0, 5, len(dataset) - 1):
            x, missing, _ = dataset[item]
            tokens = encoder(x[None], missing_channels=missing[None])
            expected = SemantoksEncoder.cls_avg(tokens)[0].numpy()
            assert np.allclose(table.matrix("cls_avg")[item], expected, atol=1e-5)
            assert table.extra["start"][item] == dataset.eval_starts(dataset.runs[item // 8][2])[item % 8]


def test_embeddings_come_from_the_cache_on_a_second_run(shards, splits, tiny_checkpoint, tmp_path, monkeypatch):
    settings = dict(EMBED, cache_dir=str(tmp_path / "cache"))
    first = tmp_path / "a" / "features.h5"
    assert embed_checkpoint(tiny_checkpoint, shards, splits, first, settings) is False

    def no_recompute(*args, **kwargs):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(embeddings, "extract_embeddings", no_recompute)
    second = tmp_path / "b" / "features.h5"
    assert embed_checkpoint(tiny_checkpoint, shards, splits, second, settings) is True
    assert np.array_equal(read_features(first).features["mean"], read_features(second).features["mean"])
    # Same bytes under another name: still a hit. Other bytes: a miss.
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(tiny_checkpoint.read_bytes())
    assert embed_checkpoint(copy, shards, splits, tmp_path / "c.h5", settings) is True
    other = tmp_path / "other.pt"
    write_random_encoder(TINY, PretrainingData(shards, (), 0), seed=4, path=other)
    with pytest.raises(AssertionError, match="recomputed"):
        embed_checkpoint(other, shards, splits, tmp_path / "d.h5", settings)


def test_checkpoints_that_do_not_fit_are_refused(shards, tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, weights_only=False)
    payload["config"]["width"] = 96
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(CheckpointError, match="edited.pt.*do not match the architecture.*export it again"):
        load_checkpoint(edited, network_map_of(shards))
    other_map = SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["tiny"], network_map=[0, 1] * 4))
    save_encoder(other_map, tmp_path / "other_map.pt", objective="semantoks")
    with pytest.raises(CheckpointError, match="channel -> network"):
        load_checkpoint(tmp_path / "other_map.pt", network_map_of(shards))
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt", network_map_of(shards), name="released")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    for format in ("brainscale", "reference"):
        with pytest.raises(CheckpointError, match="garbage.pt.*not a readable PyTorch file"):
            load_checkpoint(tmp_path / "garbage.pt", network_map_of(shards), format=format)


def test_reference_checkpoints_give_the_imported_encoder_features(reference_state, tmp_path):
    state = reference_state
    torch.save({"epoch": 100, "model_state_dict": state}, tmp_path / "ckpt.pth")
    encoder = load_checkpoint(tmp_path / "ckpt.pth", reference_network_map(), format="reference",
                              settings={"model": "base"})
    assert torch.equal(encoder.state_dict()["norm.weight"], state["teacher_encoder.norm.weight"])
    with pytest.raises(CheckpointError, match="config does not match.*Set its model"):
        load_checkpoint(tmp_path / "ckpt.pth", reference_network_map(), format="reference",
                        settings={"model": "small"}, name="released")


def test_connectivity_features_are_fisher_z_correlations(shards, splits):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 200))
    expected = np.arctanh(np.corrcoef(data)[np.triu_indices(5, k=1)])
    assert np.allclose(fisher_z_connectivity(data), expected, atol=1e-5)
    dataset = probe_dataset(shards, splits)
    table = connectivity_features(dataset)
    # One row per run (the fingerprint of subject_reid), each with its run and subject.
    assert table.features["fc"].shape == (len(dataset.runs), 1, 457 * 456 // 2)
    assert np.isfinite(table.features["fc"]).all()
    assert list(table.extra["run_id"]) == list(range(len(dataset.runs)))
    assert set(table.subjects) == set(probe_subjects(splits))
    timeseries, missing = dataset.read_run(1)
    assert np.allclose(table.matrix("fc")[1], fisher_z_connectivity(timeseries, missing))
    assert table.subjects[1] == dataset.subject_ids[dataset.runs[1][3]]


# --- scaling --------------------------------------------------------------------------------
def test_an_external_model_with_one_embedding_is_scored_on_it():
    def rows(source, feature):
        return [{"task": "sex_bi", "kind": "classification", "feature": feature, "layer": 1, "n_layers": 1,
                 "split_seed": 0, "balanced_accuracy": 0.7, "source": source, "family": "external"}]
    metrics = pd.DataFrame(rows("external/connectome", "cls") + rows("external/mine", "cls") +
                           rows("external/mine", "mean") + rows("external/mine", "cls_avg"))
    scores = final_scores(metrics)
    # the connectome by its only embedding, our encoder by cls_avg (the others not counted twice)
    assert sorted(zip(scores["source"], scores["feature"])) == [("external/connectome", "cls"),
                                                                ("external/mine", "cls_avg")]


def test_scaling_outputs_from_a_small_metrics_table(tmp_path):
    rng = np.random.default_rng(0)
    sources, files = [], []
    entries = [f"pretrain/semantoks-tiny/n-{n}_seed-{s}" for n in (8, 16, 32) for s in (0, 1)]
    entries += ["random/semantoks-tiny_seed-0", "baseline/connectivity", "baseline/oracle", "external/released"]
    # a second objective, worse than its random init at every size, trained at 8 and 32 only
    entries += [f"pretrain/jepa-tiny/n-{n}_seed-0" for n in (8, 32)] + ["random/jepa-tiny_seed-0"]
    for source in entries:
        n = int(source.split("n-")[1].split("_")[0]) if "n-" in source else 4
        n = 64 if source == "random/jepa-tiny_seed-0" else n
        rows = []
        for task, kind in (("sex_bi", "classification"), ("age", "regression")):
            for seed in range(3):
                for layer in (1, 2):
                    score = 0.5 + 0.05 * np.log2(n) + rng.normal(0, 0.01)
                    rows.append({"task": task, "kind": kind, "feature": "fc" if "baseline" in source else "cls_avg",
                                 "layer": layer, "n_layers": 2, "split_seed": seed, "balanced_accuracy": score,
                                 "r2": score - 0.4})
        path = tmp_path / source / "metrics.tsv"
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
        if source.startswith("pretrain"):  # the tasks the probe rule adds: reid (pool-wide) and a latent trait
            pd.DataFrame(rows + [{"task": "subject_reid", "kind": "identification", "feature": "cls_avg", "layer": 2,
                                  "n_layers": 2, "split_seed": -1, "top1": 0.1 + 0.01 * n},
                                 {"task": "latent_age", "kind": "regression", "feature": "cls_avg", "layer": 2,
                                  "n_layers": 2, "split_seed": 0, "r2": 0.01 * n}]).to_csv(path, sep="\t", index=False)
        sources.append(source)
        files.append(path)
    names = ("scaling_png", "scaling_pdf", "layerwise_png", "layerwise_pdf", "objectives_png", "objectives_pdf",
             "metrics", "scaling", "probe_scaling", "layerwise", "objectives")
    suffix = {"png": ".png", "pdf": ".pdf"}
    outputs = {name: tmp_path / "out" / (name + suffix.get(name.rsplit("_", 1)[-1], ".tsv")) for name in names}
    # Training budget from the exports: new ones carry samples_seen and passes, an old one only trained_steps.
    encoder = SemantoksEncoder(SemantoksConfig(**MODEL_SIZES["tiny"], network_map=[0, 1] * 4))
    encoder_sources = [source for source in entries if source.startswith("pretrain/semantoks")]
    encoder_files = []
    for source in encoder_sources:
        n, seed = (int(part) for part in source.split("n-")[1].split("_seed-"))
        path = tmp_path / source / "encoder.pt"
        metadata = {"trained_steps": 100 + seed} if n == 8 else \
            {"trained_steps": 100 + seed, "samples_seen": 1600.0 + 32 * seed, "passes": (1600.0 + 32 * seed) / n}
        save_encoder(encoder, path, objective="semantoks", **metadata)
        encoder_files.append(path)
    write_scaling_outputs(files, sources, outputs, encoder_files=encoder_files, encoder_sources=encoder_sources,
                          reference_model="semantoks-tiny")
    for path in outputs.values():
        assert path.stat().st_size > (100 if path.suffix == ".tsv" else 5000), path
    table = pd.read_csv(outputs["scaling"], sep="\t", keep_default_na=False, na_values=[""])
    table["model"] = table["model"].fillna("")
    jepa = table[(table["model"] == "jepa-tiny") & (table["family"] == "pretrained") & (table["task"] == "sex_bi")]
    assert list(jepa["size"]) == [8, 32] and (jepa["gain_mean"] < 0).all() and set(jepa["objective"]) == {"jepa"}
    ranking = pd.read_csv(outputs["objectives"], sep="\t")
    top = ranking[ranking["task"] == "sex_bi"].set_index("rank")
    assert list(top["model"]) == ["semantoks-tiny", "jepa-tiny"] and set(top["size"]) == {32}
    table = table[table["model"].isin(["semantoks-tiny", ""])]
    pretrained = table[(table["family"] == "pretrained") & (table["task"] == "sex_bi")].sort_values("size")
    assert list(pretrained["size"]) == [8, 16, 32] and (pretrained["n"] == 6).all()
    assert pretrained["gain_mean"].is_monotonic_increasing and (pretrained["gain_mean"] > 0).all()
    assert set(table["family"]) == {"pretrained", "random", "connectivity", "oracle", "external"}
    assert outputs["scaling_pdf"].read_bytes().startswith(b"%PDF")
    budget = table[table["task"] == "sex_bi"].set_index(["family", "size"], drop=False)
    assert budget.loc[("pretrained", 16), "steps"] == 100.5 and budget.loc[("pretrained", 16), "samples_seen"] == 1616
    assert budget.loc[("pretrained", 32), "passes"] == pytest.approx(1616 / 32)
    assert budget.loc[("pretrained", 8), "steps"] == 100.5 and np.isnan(budget.loc[("pretrained", 8), "samples_seen"])
    assert table.loc[table["family"] != "pretrained", ["steps", "samples_seen", "passes"]].isna().all().all()
    reid = table[(table["task"] == "subject_reid") & (table["family"] == "pretrained")].sort_values("size")
    assert list(reid["n"]) == [2, 2, 2] and reid["mean"].tolist() == pytest.approx([0.18, 0.26, 0.42])
    assert {"subject_reid", "latent_age"} <= set(table["task"])


def test_random_init_baseline_starts_where_pretraining_starts(shards, tmp_path):
    from brainscale.objectives.semantoks.distillation import SelfDistillation
    from brainscale.export import load_encoder
    from brainscale.objectives.semantoks.spec import model_config

    torch.manual_seed(21)
    start = SelfDistillation(model_config(TINY.architecture, network_map_of(shards))).teacher.state_dict()
    write_random_encoder(TINY, PretrainingData(shards, (), 0), seed=21, path=tmp_path / "random.pt")
    random = load_encoder(tmp_path / "random.pt").state_dict()
    assert all(torch.equal(random[name], start[name]) for name in start)
