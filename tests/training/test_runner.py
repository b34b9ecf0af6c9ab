"""kd.training.run on in-memory data: the result object, the run directory,
checkpoint selection, resume (with the run time summed over processes),
continuous labels, and the errors raised before any training."""

import json
import os
import time

import keras
import numpy as np
import pytest

import keras_dml as kd
from keras_dml.training import Recipe, RecipeError, Task

TINY = dict(backbone="small_cnn", weights="none", image_size=16, embedding_dim=8,
            batch_size=12, epochs=2, steps_per_epoch=2, warmup_epochs=0, eval_batch_size=32,
            lr_decay_epochs=(), num_plot_queries=3)


def images(rng, labels, size=16):
    base = (np.asarray(labels)[:, None, None, None] * 37 % 256).astype(np.float64)
    noise = rng.normal(0, 30, (len(labels), size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def class_data(rng, train_classes=6, test_classes=4, per_class=6):
    tr = np.repeat(np.arange(train_classes), per_class).astype(np.int32)
    te = np.repeat(np.arange(test_classes), per_class).astype(np.int32)
    split = kd.data.Split.from_arrays
    return kd.data.RetrievalData(
        "toy", split("train", images(rng, tr), tr), test=split("test", images(rng, te + 50), te),
        num_train_classes=train_classes, image_shape=(16, 16, 3))


def pose_data(rng, n_train=40, n_test=24):
    def part(name, n):
        labels = rng.normal(size=(n, 4)).astype(np.float32)
        return kd.data.Split.from_arrays(name, images(rng, (labels[:, 0] * 3).astype(int) % 7),
                                         labels)
    return kd.data.RetrievalData("toy_pose", part("train", n_train), test=part("test", n_test),
                                 image_shape=(16, 16, 3), label_type="pose")


def test_class_run_writes_the_run_directory_and_returns_its_result(rng, tmp_path):
    recipe = Recipe(**TINY, val_fraction=0.34)
    data = class_data(rng)
    result = kd.training.run(recipe, data, tmp_path / "run", verbose=0)
    m = result.metrics
    assert m["selected_by"] == "val_recall@1" and m["num_queries"] == 24
    assert m["split"] == "test" and m["data"] == "toy" and m["epochs"] == 2
    assert {"recall@1", "recall@8", "map@r", "r_precision"} <= set(m)
    with open(result.paths["metrics"]) as f:
        assert json.load(f) == m
    assert len(result.history["loss"]) == 2 and len(result.history["val_recall@1"]) == 2
    for key in ("recall_curve", "retrievals", "saved_model", "best_weights", "recipe"):
        assert os.path.exists(result.paths[key]), key
    assert Recipe.from_flagfile(result.paths["recipe"]) == recipe
    assert isinstance(result.model, kd.models.MetricModel)
    assert not (tmp_path / "run" / "backup").exists()
    # The returned model holds the selected weights: its test metrics again.
    _, eval_tf, norm = kd.training.prepare.transforms(recipe, data, kd.training.task_for(data))
    test_ds = kd.data.make_eval_pipeline(data.test, recipe.eval_batch_size, transform=eval_tf,
                                         normalize=norm)
    emb, labels = kd.evaluation.embed(result.model, test_ds, verbose=0)
    assert emb.shape == (24, 8)
    again = kd.evaluation.retrieval_metrics(emb, labels, ks=recipe.ks)
    assert set(again) <= set(m)
    for key, value in again.items():
        assert m[key] == pytest.approx(value, abs=1e-6), key


def test_pair_loss_without_validation_and_without_export(rng, tmp_path):
    recipe = Recipe(**TINY, loss="multi_similarity", val_fraction=0.0)
    result = kd.training.run(recipe, class_data(rng), tmp_path / "run", export=False,
                             verbose=0)
    assert result.metrics["selected_by"] == "last epoch"
    assert "saved_model" not in result.paths and "recall_curve" not in result.paths
    assert result.model.proxies is None


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(1.0)                      # measurable time in the first process
        raise KeyboardInterrupt


def test_resume_sums_the_run_time_over_processes(rng, tmp_path):
    recipe = Recipe(**TINY, val_fraction=0.34)
    data = class_data(rng)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kd.training.run(recipe, data, out, verbose=0, callbacks=[Interrupt()])
    with open(out / "run_time.json") as f:
        first = json.load(f)["seconds"]
    assert first >= 1.0
    with pytest.raises(kd.training.OutputDirError, match="interrupted run.*--resume"):
        kd.training.run(recipe, data, out, verbose=0)
    started = time.monotonic()
    result = kd.training.run(recipe, data, out, resume=True, verbose=0)
    second = time.monotonic() - started
    assert len(result.history["loss"]) == 2              # epoch 2 only, appended
    total = result.metrics["train_seconds_total"]
    assert total >= first + 0.5 * second and total <= first + second + 1.0, (first, second)


def test_continuous_run_and_early_k_check(rng, tmp_path):
    recipe = Recipe(**{**TINY, "ks": (1, 5)}, loss="log_ratio", optimizer="sgd", lr=0.01,
                    val_fraction=0.3)
    result = kd.training.run(recipe, pose_data(rng), tmp_path / "pose", export=False,
                             verbose=0)
    m = result.metrics
    assert m["selected_by"] == "val_ndcg@1" and m["num_queries"] == 24
    assert 0 < m["ndcg@5"] <= 1 and m["mean_label_distance@1"] >= 0
    assert os.path.exists(result.paths["recall_curve"])
    with pytest.raises(RecipeError, match="ks up to 20 needs more than 20 other "
                                          "validation examples per query; there are 11"):
        kd.training.run(recipe.replace(ks=(1, 20)), pose_data(rng), tmp_path / "few")
    assert not (tmp_path / "few").exists()               # refused before anything


def test_class_run_refuses_k_not_below_the_retrievable_items(rng, tmp_path):
    # 4 test classes x 6 = 24 test items: a query retrieves 23, so K=23 is
    # refused (Recall@23 would be 1 for any embedding) and K=22 is allowed.
    recipe = Recipe(**{**TINY, "ks": (1, 23)}, val_fraction=0.0)
    with pytest.raises(RecipeError, match="ks up to 23 needs more than 23 other test "
                                          "examples per query; there are 23"):
        kd.training.run(recipe, class_data(rng), tmp_path / "k23")
    assert not (tmp_path / "k23").exists()
    # Validation: 2 held-out classes x 6 = 12 items, 11 to retrieve.
    with pytest.raises(RecipeError, match="other validation examples per query; there "
                                          "are 11"):
        kd.training.run(recipe.replace(ks=(1, 11), val_fraction=0.34), class_data(rng),
                        tmp_path / "k11")


def test_loss_and_labels_must_match(rng, tmp_path):
    with pytest.raises(RecipeError, match="does not take continuous labels; .*log_ratio"):
        kd.training.run(Recipe(**TINY), pose_data(rng), tmp_path / "a")
    with pytest.raises(RecipeError, match="does not take class labels"):
        kd.training.run(Recipe(**TINY, loss="log_ratio"), class_data(rng), tmp_path / "b")
    with pytest.raises(RecipeError, match="val_split='classes' needs class labels"):
        kd.training.run(Recipe(**TINY, loss="log_ratio", val_split="classes"),
                        pose_data(rng), tmp_path / "c", task=Task(True, "squared_l2"))
    with pytest.raises(TypeError, match="Recipe"):
        kd.training.run({"loss": "triplet"}, class_data(rng), tmp_path / "d")
    assert kd.training.task_for(pose_data(rng)).label_distance == "squared_l2"


def test_sampler_option_picks_label_space_or_random_batches(rng):
    data = pose_data(rng, n_train=40)
    task = kd.training.task_for(data)
    recipe = Recipe(**TINY, loss="log_ratio", val_fraction=0.0)
    loss = kd.training.build.build_loss(recipe, task)
    tf_, _, norm = kd.training.prepare.transforms(recipe, data, task)

    def steps(r):
        ds = kd.training.prepare.train_pipeline(r, task, loss, data.train, tf_, norm)
        return int(ds.cardinality().numpy())

    assert steps(recipe) == 40 == steps(recipe.replace(sampler="label_space"))  # 1 per anchor
    assert steps(recipe.replace(sampler="random")) == 40 // 12              # shuffled
    # Random batches for a pair loss on classes too (no P x M sampler).
    cdata = class_data(rng)
    crecipe = Recipe(**TINY, loss="triplet", sampler="random", val_fraction=0.0)
    closs = kd.training.build.build_loss(crecipe, kd.training.task_for(cdata))
    ds = kd.training.prepare.train_pipeline(crecipe, kd.training.task_for(cdata), closs,
                                           cdata.train, tf_, norm)
    assert int(ds.cardinality().numpy()) == 36 // 12
    with pytest.raises(RecipeError, match="label_space' needs continuous labels"):
        kd.training.prepare.train_pipeline(crecipe.replace(sampler="label_space"),
                                          kd.training.task_for(cdata), closs, cdata.train,
                                          tf_, norm)


def test_loss_kwargs_reach_the_loss(rng, tmp_path):
    task = kd.training.task_for(class_data(rng))
    loss = kd.training.build.build_loss(
        Recipe(**TINY, loss_kwargs="alpha=16,margin=0.2"), task)
    assert (loss.alpha, loss.margin) == (16, 0.2)
    ptask = kd.training.task_for(pose_data(rng))
    loss = kd.training.build.build_loss(
        Recipe(**TINY, loss="log_ratio", loss_kwargs="anchors=first,squared=false,"
               "ratio=plain"), ptask)
    assert (loss.anchors, loss.squared, loss.ratio, loss.label_distance) == \
        ("first", False, "plain", "squared_l2")
    recipe = Recipe(**TINY, loss="log_ratio", loss_kwargs="ratio=plain", optimizer="sgd",
                    lr=0.01, val_fraction=0.3, sampler="random", ks=(1, 5))
    result = kd.training.run(recipe, pose_data(rng), tmp_path / "plain", export=False,
                             verbose=0)
    assert np.isfinite(result.history["loss"]).all()
    assert Recipe.from_flagfile(result.paths["recipe"]) == recipe


def test_steps_per_epoch_is_exact_even_past_one_pass(rng, tmp_path):
    # 36 training images in batches of 12: 3 per pass; 2 epochs x 5 steps.
    class Count(keras.callbacks.Callback):
        steps = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.steps += 1

    recipe = Recipe(**{**TINY, "steps_per_epoch": 5}, loss="triplet", val_fraction=0.0)
    kd.training.run(recipe, class_data(rng), tmp_path / "run", export=False, verbose=0,
                    callbacks=[Count()])
    assert Count.steps == 10


def event_files(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root / "logs")
                  for f in files if "tfevents" in f)


def test_rerunning_into_a_finished_run_is_refused_unless_overwrite(rng, tmp_path):
    # Issue 17.6: a rerun overwrote metrics.json and mixed two runs' events.
    recipe = Recipe(**{**TINY, "epochs": 1}, val_fraction=0.0)
    out = tmp_path / "run"
    kd.training.run(recipe, class_data(rng), out, export=False, verbose=0)
    first_events = event_files(out)
    before = (out / "metrics.json").read_bytes()
    (out / "notes.txt").write_text("mine")                 # not a run file: kept
    for resume in (False, True):
        with pytest.raises(kd.training.OutputDirError,
                           match="already holds a finished run.*--overwrite.*--resume"):
            kd.training.run(recipe, class_data(rng), out, resume=resume, verbose=0)
    assert (out / "metrics.json").read_bytes() == before and event_files(out) == first_events
    with pytest.raises(kd.training.OutputDirError, match="not both"):
        kd.training.run(recipe, class_data(rng), out, resume=True, overwrite=True)
    result = kd.training.run(recipe, class_data(rng), out, overwrite=True, export=False,
                             verbose=0)
    again = event_files(out)
    assert again and not set(again) & set(first_events)    # one run's events only
    assert len(again) == len(first_events)
    assert result.metrics["num_queries"] == 24 and (out / "notes.txt").read_text() == "mine"


NAMES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]


def test_index_names_the_split_classes_and_model_and_the_export_serves_what_was_evaluated(
        rng, tmp_path):
    import tensorflow as tf
    # Issue 17.1: the test split made by hold_out_classes is named "val" and
    # renumbered; its index items must say "test" and name their own class.
    labels = np.repeat(np.arange(10), 5).astype(np.int32)
    whole = kd.data.Split.from_arrays("all", images(rng, labels), labels,
                                      info={"class_names": NAMES,
                                            "classes": list(range(10))})
    train, test = kd.data.hold_out_classes(whole, 0.4, seed=1)
    assert test.name == "val"
    data = kd.data.RetrievalData("toy", train, test=test, num_train_classes=6,
                                 image_shape=(16, 16, 3))
    recipe = Recipe(**{**TINY, "epochs": 1}, val_fraction=0.0, ks=(1, 2))
    result = kd.training.run(recipe, data, tmp_path / "run", verbose=0)
    index = kd.retrieval.Index.load(result.paths["index"])
    test_images = np.stack([x.numpy() for x, _ in test.dataset()])
    for i, m in enumerate(index.metadata):
        assert m["split"] == "test"
        original = int(labels[m["index"]])                 # the whole split's class
        assert m["class_name"] == NAMES[original] and m["class"] == original
        assert int(index.labels[i]) == int(test.labels[i])
    # Issue 17.5: the index records the model, as the SavedModel does.
    fingerprint = kd.retrieval.model_fingerprint(result.model)
    assert index.model_fingerprint == fingerprint
    assert kd.retrieval.model_fingerprint(result.paths["saved_model"]) == fingerprint
    # Issue 17.3: the export's defaults are the model's own preprocessing and
    # eval transform: served embeddings equal the evaluated (indexed) ones.
    served = tf.saved_model.load(result.paths["saved_model"]).signatures[
        "serving_default"](images=tf.constant(test_images))["embeddings"].numpy()
    np.testing.assert_allclose(served, index.embeddings, atol=1e-5)
    info = json.loads(open(os.path.join(result.paths["saved_model"], "assets.extra",
                                        "keras_dml.json")).read())
    assert info["preprocess"] == "inception" and "Compose" in info["transform"]


def test_pair_loss_with_cross_batch_memory(rng, tmp_path):
    """recipe memory_size: the runner's MetricModel keeps a memory of 30
    (four steps of 12 wrap it), which the run's model carries."""
    recipe = Recipe(**TINY, loss="multi_similarity", val_fraction=0.0, memory_size=30)
    result = kd.training.run(recipe, class_data(rng), tmp_path / "run", export=False,
                             verbose=0)
    memory = result.model.memory
    assert result.model.memory_size == 30
    assert int(keras.ops.convert_to_numpy(memory.filled)) == 30
    assert int(keras.ops.convert_to_numpy(memory.position)) == 4 * 12 % 30
    with pytest.raises(kd.training.RecipeError, match="batch_size"):
        Recipe(**TINY, loss="multi_similarity", memory_size=6)
