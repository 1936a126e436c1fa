"""Where XLA compiles a keypoint-gnn model: nowhere, the graph section only, or the whole step.

Modes (`--xla MODE` in the trainers):

- `"off"`: no XLA.
- `"step"`: `model.compile(jit_compile=True)`: the whole training and prediction step.
- `"graph"`: only the keypoint and graph layers (detector, CNN->graph, GNN, graph->CNN, grid
  graph) run as XLA clusters, each layer's `call` wrapped in `tf.function(jit_compile=True)`;
  the convolutions stay with TensorFlow's own kernels.
- `"auto"`: `"step"` when a GPU is visible, `"graph"` otherwise.

Why "graph" on a CPU: XLA:CPU compiles convolutions and batch norm into its own kernels, which
on the 2-core development machine were 1.4-1.8x slower than the oneDNN kernels TensorFlow uses
without XLA (docs/BENCHMARKS.md, profile), so a whole-step `jit_compile` made training 1.4-2.3x
slower, while the gather / scatter / top-k / adjacency ops of the graph section got 1.5-2x faster.
On a GPU, fusing the whole step is what XLA is for.

The graph-section wrappers live on the layer instances only while `jit_graph_section` is
active: saved models, SavedModel exports and TFLite conversions never contain them.
"""
import contextlib

from keypoint_gnn import layers
from keypoint_gnn._backend import keras, tf

XLA_MODES = ("off", "auto", "graph", "step")

GRAPH_SECTION_TYPES = (
    layers.KeypointDetector,
    layers.CNNToGraph,
    layers.GraphToCNN,
    layers.GridToGraph,
    layers.GCNStack,  # GATStack too, a subclass
    layers.ViGStack,
)
"""Layer classes whose `call` the "graph" mode compiles. Not `layers.DiffPoolUnpool`: Spektral's
DiffPool adds its auxiliary losses (`add_loss`) inside its call, and a loss made inside a
tf.function cannot be read by the training step outside it."""


def check_mode(mode):
    if mode not in XLA_MODES:
        raise ValueError(f"xla={mode!r} is not one of {XLA_MODES}")
    return mode


def resolve_mode(mode, gpu_visible=None):
    """The concrete mode ("off", "graph" or "step") that `mode` means on this machine."""
    check_mode(mode)
    if mode != "auto":
        return mode
    if gpu_visible is None:
        gpu_visible = bool(tf.config.list_physical_devices("GPU"))
    return "step" if gpu_visible else "graph"


def compile_kwargs(mode):
    """Keyword arguments for `model.compile` under a resolved mode."""
    return {"jit_compile": check_mode(mode) == "step"}


def graph_section_layers(model):
    """The layers of `model` (searched through nested models) that "graph" mode compiles."""
    found = []

    def visit(layer):
        if isinstance(layer, GRAPH_SECTION_TYPES):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            for child in layer.layers:
                visit(child)

    for layer in model.layers:
        visit(layer)
    return found


def compile_graph_section(model):
    """Wraps the `call` of each graph-section layer of `model` in an XLA-compiled tf.function.

    Returns the wrapped layers; `release_graph_section(layers)` undoes it. Prefer the
    `jit_graph_section` block, which cannot forget the release.
    """
    layers = graph_section_layers(model)
    for layer in layers:
        if jit_method(layer) in vars(layer):
            raise RuntimeError(f"layer {layer.name!r} already has an instance-level "
                               f"{jit_method(layer)}; is its graph section compiled already?")
    for layer in layers:
        name = jit_method(layer)
        method = getattr(type(layer), name).__get__(layer)
        setattr(layer, name, tf.function(method, jit_compile=True, autograph=False))
    return layers


def jit_method(layer):
    """The method "graph" mode compiles: `call`, or the one a layer names in `xla_method`
    (a layer whose `call` adds losses compiles the part that computes them)."""
    return getattr(layer, "xla_method", "call")


def release_graph_section(layers):
    for layer in layers:
        vars(layer).pop(jit_method(layer), None)


@contextlib.contextmanager
def jit_graph_section(model, mode="graph"):
    """Within the block, the graph-section layers of `model` run XLA-compiled (mode "graph").

    Any other mode leaves the model as it is, so trainers can wrap `fit` unconditionally.
    Yields the wrapped layers. Keras caches the traced train / predict functions: build them
    (call `fit`, `evaluate`, `predict`) inside the block to get the compiled layers.
    """
    if check_mode(mode) != "graph":
        yield []
        return
    layers = compile_graph_section(model)
    try:
        yield layers
    finally:
        release_graph_section(layers)
