"""KerasTuner search spaces over keypoint-gnn models.

KerasTuner 1.4 imports Keras 3 and rejects tf_keras models (keras-tuner issue #1039); binding
the module name `keras` to tf_keras before `keras_tuner` is first imported makes it build and
train tf_keras models. Trials that fail (for example without TensorBoard installed) still let
`search()` return normally, so `check_trials` verifies that every trial COMPLETED.
"""
import sys

from keypoint_gnn._backend import keras

_previous_keras = sys.modules.get("keras")
if "keras_tuner" not in sys.modules:
    sys.modules["keras"] = keras
import keras_tuner  # noqa: E402

if _previous_keras is not None:  # leave `import keras` as it was for everyone else
    sys.modules["keras"] = _previous_keras
else:
    sys.modules.pop("keras", None)

from keypoint_gnn import registry, rules  # noqa: E402
from keypoint_gnn.config import ModelConfig  # noqa: E402
from keypoint_gnn.models import build_classifier  # noqa: E402

TUNERS = ("hyperband", "bayesian")
SEARCHED_DETECTORS = ("attention", "maxpool_nms", "grid")  # the paper's three, by default
SEARCHED_GRAPHS = ("gcn", "diffpool", "none")  # the paper's, by default; "gat", "vig" may be added
WINDOWED_DETECTORS = registry.WINDOWED_DETECTORS  # the detectors `refinements` applies to


def _check_subset(name, values, valid):
    values = tuple(values)
    if not values or any(value not in valid for value in values) or len(set(values)) < len(values):
        raise ValueError(f"{name}={list(values)!r} must be distinct values from "
                         f"{', '.join(valid)}")
    return values


class KeypointHyperModel(keras_tuner.HyperModel):
    """Searches detector, GNN, graph layers, keypoints, score activation and learning rate.

    Choices that the feature map cannot hold (more keypoints than locations or windows) are
    left out of the space for the given `base` config. `detectors` are the detectors searched
    (the paper's three by default; "perturbed_topk" may be added). `refinements` are the
    `detector.refinement` values searched for the windowed detectors (max-pool NMS, perturbed
    top-k), as a hyperparameter that exists only in their trials; the default ("none",) leaves
    it out of the space. `graphs` are the `graph.kind` values searched (the paper's GCN,
    DiffPool and "CNN only" by default; "gat" and "vig" may be added). A keypoint count is
    searched only if every detector and graph kind can take it: with "vig", counts up to
    `base.graph.knn` x `knn_dilation` leave the space for every kind.
    """

    def __init__(self, base: ModelConfig, keypoint_choices=(16, 32, 64), max_graph_layers=9,
                 detectors=SEARCHED_DETECTORS, refinements=("none",), graphs=SEARCHED_GRAPHS):
        super().__init__()
        self.base = base
        self.detectors = _check_subset("detectors", detectors, tuple(registry.DETECTORS))
        self.graphs = _check_subset("graphs", graphs, tuple(registry.GNNS))
        self.refinements = _check_subset("refinements", refinements, rules.REFINEMENTS)
        self.windowed = [d for d in self.detectors if d in WINDOWED_DETECTORS]
        if self.refinements != ("none",) and not self.windowed:
            raise ValueError(f"refinements={list(self.refinements)!r} apply to the windowed "
                             f"detectors {', '.join(WINDOWED_DETECTORS)}, none of which is among "
                             f"detectors={list(self.detectors)!r}")
        self.keypoint_choices = [k for k in keypoint_choices if self._fits(k)]
        if not self.keypoint_choices:
            raise ValueError(
                f"none of the keypoint counts {list(keypoint_choices)} fits every detector and "
                f"graph kind on the "
                f"{base.feature_size}x{base.feature_size} feature map of image_size={base.image_size}"
            )
        self.max_graph_layers = max_graph_layers

    def _fits(self, keypoints):
        try:
            for detector in self.detectors:
                for graph in self.graphs:
                    self.base.updated({
                        "detector": {"kind": detector, "num_keypoints": keypoints},
                        "graph": {"kind": graph,
                                  "diffpool_clusters": min(self.base.graph.diffpool_clusters,
                                                           keypoints)}})
        except ValueError:
            return False
        return True

    def config(self, hp):
        gnn = hp.Choice("gnn", list(self.graphs))
        detector = hp.Choice("detector", list(self.detectors))
        refinement = "none"
        if self.refinements != ("none",):
            with hp.conditional_scope("detector", self.windowed):
                chosen = hp.Choice("refinement", list(self.refinements))
            if detector in self.windowed:
                refinement = chosen
        keypoints = hp.Choice("num_keypoints", self.keypoint_choices)
        return self.base.updated({
            "detector": {"kind": detector, "refinement": refinement, "num_keypoints": keypoints,
                         "score_activation": hp.Choice("score_activation",
                                                       list(rules.SCORE_ACTIVATIONS))},
            "graph": {"kind": gnn, "layers": hp.Int("graph_layers", 2, self.max_graph_layers),
                      "diffpool_clusters": min(self.base.graph.diffpool_clusters, keypoints)},
        })

    def build(self, hp):
        model = build_classifier(self.config(hp))
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 3e-4, 5e-3, sampling="log")),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model


def make_tuner(name, hypermodel, directory, project_name, max_trials, max_epochs, seed=0):
    """A KerasTuner tuner maximising validation accuracy."""
    objective = keras_tuner.Objective("val_accuracy", direction="max")
    common = dict(objective=objective, directory=str(directory), project_name=project_name, seed=seed,
                  overwrite=False)
    if name == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, factor=3,
                                     hyperband_iterations=1, max_consecutive_failed_trials=1, **common)
    if name == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials,
                                                max_consecutive_failed_trials=1, **common)
    raise ValueError(f"tuner={name!r} is not one of {', '.join(TUNERS)}")


def check_trials(tuner):
    """Returns {trial_id: status}; raises RuntimeError if any trial did not COMPLETE."""
    statuses = {trial_id: trial.status for trial_id, trial in tuner.oracle.trials.items()}
    failed = {trial_id: status for trial_id, status in statuses.items() if status != "COMPLETED"}
    if not statuses:
        raise RuntimeError("the search ran no trial")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(statuses)} trials did not complete: {failed}")
    return statuses
