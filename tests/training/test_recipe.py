"""kd.training.Recipe: flagfiles (packaged and paths), dicts, validation."""

import dataclasses

import pytest

import keras_dml as kd
from keras_dml.training import Recipe, RecipeError


def test_every_packaged_flagfile_loads_and_round_trips(tmp_path):
    names = kd.training.packaged_recipes()
    assert "cub200_proxy_anchor" in names and "fashion_mnist_proxy_anchor" in names
    # 17 + the glyph app's 8 (one per class loss) + train + the 4 DINOv2 recipes
    assert len(names) == 30
    for name in names:
        recipe = Recipe.from_flagfile(name)
        assert name.endswith("_" + recipe.loss), name
        path = tmp_path / f"{name}.cfg"
        path.write_text(recipe.to_flagfile())
        assert Recipe.from_flagfile(str(path)) == recipe


def test_flagfile_values_and_names():
    r = Recipe.from_flagfile("cub200_proxy_anchor")
    assert (r.loss, r.backbone, r.freeze_bn, r.lr, r.lr_decay_epochs, r.ks) == \
        ("proxy_anchor", "bn_inception", True, 1e-4, (10,), (1, 2, 4, 8))
    assert Recipe.from_flagfile("cub200_proxy_anchor", epochs=2) == r.replace(epochs=2)
    assert kd.training.recipe_path("proxy_anchor", app="cub200").name == \
        "cub200_proxy_anchor.cfg"
    demo = Recipe.from_flagfile("fashion_mnist_proxy_anchor")
    assert demo.lr_decay_epochs == () and demo.val_split == "examples"
    assert demo.max_train_examples == 10000 and demo.image_size == 64
    inshop = Recipe.from_flagfile("inshop_proxy_anchor")
    assert inshop.freeze_bn is False and inshop.ks == (1, 10, 20, 40)
    with pytest.raises(RecipeError, match="cub200's recipes: .*proxy_anchor"):
        kd.training.recipe_path("nope", app="cub200")


def test_pair_loss_flagfiles_set_nothing_twice():
    for name in kd.training.packaged_recipes("cub200"):
        lines = [ln for ln in open(kd.training.recipe_path(name)) if ln.startswith("--")]
        keys = [ln.split("=")[0] for ln in lines]
        assert len(keys) == len(set(keys)), name
        text = open(kd.training.recipe_path(name)).read()
        if not kd.losses.get(Recipe.from_flagfile(name).loss).takes_proxies:
            assert "proxies lr" not in text and "proxy_lr_multiplier" not in text, name


def test_flagfile_errors(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("--lr=1e-3\n--lr=1e-4\n")
    with pytest.raises(RecipeError, match="bad.cfg:2: --lr is set twice"):
        Recipe.from_flagfile(str(bad))
    bad.write_text("# c\n--colour=red\n")
    with pytest.raises(RecipeError, match="bad.cfg:2: unknown recipe flag --colour"):
        Recipe.from_flagfile(str(bad))
    bad.write_text("lr=1\n")
    with pytest.raises(RecipeError, match="expected --name=value"):
        Recipe.from_flagfile(str(bad))
    bad.write_text("--epochs=two\n")
    with pytest.raises(RecipeError, match="bad.cfg: epochs must be an integer"):
        Recipe.from_flagfile(str(bad))
    with pytest.raises(RecipeError, match="no flagfile or packaged recipe"):
        Recipe.from_flagfile("missing_recipe")


def test_from_dict_converts_and_validates():
    r = Recipe.from_dict({"loss": "triplet", "ks": ["1", "5"], "lr_decay_epochs": "5,9",
                          "freeze_bn": "false", "max_test_examples": "None", "lr": "0.01"})
    assert r.ks == (1, 5) and r.lr_decay_epochs == (5, 9) and r.freeze_bn is False
    assert r.max_test_examples is None and r.lr == 0.01
    assert r.replace(epochs=3).epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.epochs = 4
    for bad, match in [({"loss": "nope"}, "not a known loss"),
                       ({"optimizer": "adam"}, "optimizer must be one of"),
                       ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
                       ({"ks": [1, 1]}, "distinct positive"),
                       ({"ks": []}, "distinct positive"),
                       ({"batch_size": 0}, "batch_size must be >= 1"),
                       ({"lr": 0}, "lr must be > 0"),
                       ({"lr_decay_epochs": [9, 5]}, "increasing"),
                       ({"epochs": 1.5}, "epochs must be an integer"),
                       ({"freeze_bn": "maybe"}, "boolean"),
                       ({"colour": 1}, "unknown recipe field")]:
        with pytest.raises(RecipeError, match=match):
            Recipe.from_dict(bad)
    with pytest.raises(RecipeError, match="takes a dict"):
        Recipe.from_dict([("loss", "triplet")])


def test_loss_kwargs_and_sampler_fields(tmp_path):
    r = Recipe(loss="proxy_anchor", loss_kwargs=" alpha=16, margin=0.2 ")
    assert r.loss_arguments() == {"alpha": 16, "margin": 0.2}
    assert Recipe().loss_arguments() == {} and Recipe().sampler == "auto"
    lr = Recipe(loss="log_ratio", loss_kwargs="anchors=first,squared=False,ratio=plain")
    assert lr.loss_arguments() == {"anchors": "first", "squared": False, "ratio": "plain"}
    path = tmp_path / "r.cfg"
    path.write_text(lr.replace(sampler="random").to_flagfile())
    assert Recipe.from_flagfile(str(path)) == lr.replace(sampler="random")
    with pytest.raises(RecipeError, match=r"\['beta'\] are not arguments of ProxyAnchorLoss"):
        Recipe(loss_kwargs="beta=1")
    with pytest.raises(RecipeError, match="are not arguments of LogRatioLoss"):
        Recipe(loss="log_ratio", loss_kwargs="label_distance=l1")   # the task sets it
    with pytest.raises(RecipeError, match="name=value pairs"):
        Recipe(loss_kwargs="alpha")
    with pytest.raises(RecipeError, match="sets 'alpha' twice"):
        Recipe(loss_kwargs="alpha=1,alpha=2")
    with pytest.raises(RecipeError, match="ratio must be one of"):
        Recipe(loss="log_ratio", loss_kwargs="ratio=linear")
    with pytest.raises(RecipeError, match="sampler must be one of"):
        Recipe(sampler="dense")
