"""keypoint_gnn.presets: the real-data presets resolve, build, and hold what their descriptions
say (sizes, recipe); the resume identity of a decaying schedule includes its epochs."""
import pytest

import keypoint_gnn as kg
from keypoint_gnn import presets, run_config
from trainers import common

# preset -> (image px, parameter band of the keypoint classifier at 10 classes)
REAL_DATA = {
    "imagenette-64": (64, (1.0e6, 1.6e6)),
    "imagenette-128": (128, (10e6, 13e6)),
    "paper-size": (128, (3.3e6, 6.5e6)),  # the paper's 3.3-6.5M
    "fashion-mnist": (32, (1.0e6, 1.6e6)),
    "cifar10": (32, (10e6, 13e6)),
}


def resolved(name):
    return run_config.resolve(preset=presets.preset(name, "classify"))


def test_the_real_data_presets_are_listed():
    assert sorted(presets.real_data_presets()) == sorted(REAL_DATA)


@pytest.mark.parametrize("name", sorted(REAL_DATA))
def test_real_data_preset_builds_at_its_size_with_the_recipe(name):
    size, (low, high) = REAL_DATA[name]
    run = resolved(name)
    channels = run.data.channels or 3
    config = run.model.with_data(image_size=run.model.image_size, channels=channels,
                                 num_classes=10)
    assert config.image_size == size and config.backbone.kind == "resnet"
    model = kg.build_classifier(config)
    assert low <= model.count_params() <= high
    plain = kg.build_plain_cnn(config, model.count_params())
    assert abs(plain.count_params() - model.count_params()) <= 0.02 * model.count_params()
    train = run.train
    assert (train.optimizer, train.schedule, train.ema) == ("adamw", "cosine", False)
    assert train.label_smoothing > 0 and train.weight_decay > 0 and train.epochs <= 30
    assert "flip" in run.data.augment


def test_imagenette_64_fits_the_cpu_budget_of_the_issue():
    """<= 20 epochs; photos: random resized crop."""
    run = resolved("imagenette-64")
    assert run.train.epochs <= 20 and "resized_crop" in run.data.augment


@pytest.mark.parametrize("schedule, epochs_matter", [("constant", False), ("cosine", True)])
def test_epochs_are_part_of_a_run_identity_only_for_a_decaying_schedule(schedule,
                                                                        epochs_matter):
    base = run_config.resolve(flags={"train.schedule": schedule, "train.epochs": 4})
    longer = base.updated({"train": {"epochs": 8}})
    same = common.run_identity(base) == common.run_identity(longer)
    assert same is not epochs_matter


@pytest.mark.parametrize("name", ["paper-t1-diffpool", "paper-t1-diffpool-sigmoid",
                                  "paper-t2-diffpool-64kp"])
def test_the_paper_diffpool_presets_keep_spektrals_unweighted_losses(name):
    """The library's DiffPool default trains without the auxiliary losses (weight 0, chosen by
    measurement); the paper's rows keep Ying et al.'s unweighted losses (1.0)."""
    graph = presets.PRESETS[name]["config"]["model"]["graph"]
    assert (graph["kind"], graph["diffpool_loss_weight"]) == ("diffpool", 1.0)
    if name.startswith("paper-t1"):
        resolved_graph = resolved(name).model.graph
        assert resolved_graph.diffpool_loss_weight == 1.0
    assert kg.GraphConfig().diffpool_loss_weight == 0.0
