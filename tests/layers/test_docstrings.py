"""Every public layer's class docstring: its sections, its paper reference, and its examples,
which run for real under doctest."""
import doctest
import inspect

import pytest

from keypoint_gnn import layers
from keypoint_gnn._backend import keras, tf

BASES = ("KeypointDetector", "ScoreMapDetector")
PUBLIC_LAYERS = [name for name in layers.__all__ if name not in BASES]


# Reported, not fixed here (library code belongs to others): GridToGraph cites the paper's
# "(introduction)", which has no section number, and does not say "beyond the paper".
UNCITED = {}  # layer name -> reason, for a layer whose docstring names no paper section


def _takes_arguments(cls):
    """Whether the constructor takes anything besides **kwargs and the arguments every Keras
    layer takes (trainable, name, dtype, ...)."""
    keras_layer = set(inspect.signature(keras.layers.Layer.__init__).parameters)
    return bool(set(inspect.signature(cls.__init__).parameters) - keras_layer)


def test_the_public_layers_are_listed():
    assert len(PUBLIC_LAYERS) == len(layers.__all__) - len(BASES) >= 10
    assert "ConfidenceWeightedMSE" in PUBLIC_LAYERS and "CNNToGraph" in PUBLIC_LAYERS
    assert not _takes_arguments(layers.ConfidenceWeightedMSE) and _takes_arguments(layers.GCNStack)


@pytest.mark.parametrize("name", PUBLIC_LAYERS)
def test_docstring_sections(name):
    cls = getattr(layers, name)
    doc = inspect.getdoc(cls) or ""
    sections = ["Input shape:", "Output shape:", "Example"]
    if _takes_arguments(cls):
        sections.append("Args:")
    missing = [section for section in sections if section not in doc]
    assert not missing, f"{name}'s docstring lacks {missing}"


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=UNCITED[name]))
    if name in UNCITED else name
    for name in PUBLIC_LAYERS
])
def test_docstring_names_a_paper_section(name):
    doc = inspect.getdoc(getattr(layers, name)) or ""
    assert "§" in doc or "beyond the paper" in doc, f"{name}'s docstring names no paper section"


@pytest.mark.parametrize("name", PUBLIC_LAYERS)
def test_docstring_examples_run(name):
    cls = getattr(layers, name)
    globs = {"tf": tf, **{layer: getattr(layers, layer) for layer in layers.__all__}}
    tests = doctest.DocTestFinder().find(cls, name, globs=globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    reports = []
    for test in tests:
        runner.run(test, out=reports.append)
    assert runner.failures == 0, "".join(reports)
    assert runner.tries >= 1, f"{name}'s docstring has no example"
