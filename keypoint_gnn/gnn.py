"""Graph networks over the keypoint graph (paper §7); the only module that imports Spektral.

Spektral's conv layers replace `self.call` with a one-argument wrapper at construction time,
which breaks tf_keras's SavedModel export ("call() takes 1 positional argument but 2 were
given"). `_plain_call` removes that instance attribute so the class's own `call` is used.
"""
from keypoint_gnn import ops
from keypoint_gnn._checks import check_positive_int
from keypoint_gnn._backend import keras, tf

from spektral.layers import DiffPool, GCNConv  # noqa: E402  (after _backend selects tf_keras)

GNN_NAMES = ("gcn", "diffpool", "none")


def _plain_call(layer):
    if "call" in vars(layer):
        del layer.call
    return layer


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GCNStack(keras.layers.Layer):
    """A stack of L graph convolutions (Kipf & Welling 2017), paper §7.

    X^(l+1) = act(Â X^(l) W^(l)),  Â = D^-1/2 (A) D^-1/2 given already normalised;
    with `residual=True` (beyond the paper), X^(0) = X W_in (a linear projection to `units`)
    and X^(l+1) = X^(l) + act(Â X^(l) W^(l)).

    Why residual: the keypoint graph is dense (every pair of keypoints is joined, with weights
    1/(1+d) that vary little), so each plain GCN layer averages nearly all nodes and after a few
    layers every node holds the same vector (over-smoothing); measured on the default model,
    the node features' spread across nodes fell to 6% of their mean after 4 layers, and
    training stayed at chance. The skip keeps each node's own features.

    **Mode**: batch `([batch], N, N)` adjacency or mixed (one `(N, N)` dense or sparse
    adjacency shared by the batch, as `GridToGraph` gives).
    **Input**: `[nodes (B, N, F), adjacency]`, adjacency GCN-normalised.
    **Output**: `(B, N, units)`.

    Arguments:
      units: channels of every layer.
      num_layers: L (the paper uses 4, 5 and 9).
      activation: of every layer.
      residual: project the input to `units`, then add each layer's input to its output.
    """

    def __init__(self, units, num_layers, activation="relu", residual=False, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        check_positive_int("num_layers", num_layers)
        self.units = units
        self.num_layers = num_layers
        self.activation = activation
        self.residual = residual
        self.convs = [
            _plain_call(GCNConv(units, activation=activation, name=f"gcn_{i}", dtype=self.dtype_policy))
            for i in range(num_layers)
        ]
        self.projection = (
            keras.layers.Dense(units, use_bias=False, name="projection", dtype=self.dtype_policy)
            if residual else None
        )

    def call(self, inputs):
        nodes, adjacency = inputs
        if self.projection is not None:
            nodes = self.projection(nodes)
        for conv in self.convs:
            update = conv([nodes, adjacency])
            nodes = nodes + update if self.residual else update
        return nodes

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, num_layers=self.num_layers, activation=self.activation,
                      residual=self.residual)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class DiffPoolUnpool(keras.layers.Layer):
    """DiffPool to k clusters, graph convolutions on the coarse graph, then unpooling.

    Ying et al. 2018, paper §7:  S = softmax(GNN_pool(A, X)),  X_c = S^T GNN_embed(A, X),
    A_c = S^T A S; then L - 1 GCN layers on (X_c, A_c); finally X' = S X_c, so every keypoint
    gets back a feature vector for the graph-to-CNN interconnect. DiffPool adds its link
    prediction and entropy losses to the model (`add_loss`).

    **Mode**: batch.
    **Input**: `[nodes (B, N, F), adjacency (B, N, N)]`, adjacency *not* normalised (DiffPool
    adds self loops and normalises internally).
    **Output**: `(B, N, units)`.

    Arguments:
      units: channels.
      clusters: k, nodes of the coarse graph.
      num_layers: total graph layers, the DiffPool layer included.
      activation: of every layer.
      residual: add a linear projection of each node's input features to its unpooled output,
        so nodes of one cluster are not reduced to the same vector.
    """

    def __init__(self, units, clusters, num_layers=2, activation="relu", residual=False, **kwargs):
        super().__init__(**kwargs)
        self.residual = residual
        check_positive_int("units", units)
        check_positive_int("clusters", clusters)
        check_positive_int("num_layers", num_layers)
        self.units = units
        self.clusters = clusters
        self.num_layers = num_layers
        self.activation = activation
        self.pool = _plain_call(
            DiffPool(clusters, channels=units, return_selection=True, activation=activation,
                     name="diffpool", dtype=self.dtype_policy)
        )
        self.coarse = (
            GCNStack(units, num_layers - 1, activation, residual=residual, name="coarse_gcn",
                     dtype=self.dtype_policy)
            if num_layers > 1
            else None
        )
        self.skip = keras.layers.Dense(units, name="skip", dtype=self.dtype_policy) if residual else None

    def build(self, input_shape):
        num_nodes = input_shape[0][1]
        if num_nodes is not None and self.clusters > num_nodes:
            raise ValueError(
                f"clusters={self.clusters} exceeds the {num_nodes} nodes of the graph"
            )
        super().build(input_shape)

    def call(self, inputs):
        nodes, adjacency = inputs
        coarse_nodes, coarse_adjacency, selection = self.pool([nodes, adjacency])
        if self.coarse is not None:
            coarse_nodes = self.coarse([coarse_nodes, ops.gcn_normalize(coarse_adjacency, add_self_loops=True)])
        unpooled = tf.matmul(selection, coarse_nodes)
        return unpooled + self.skip(nodes) if self.skip is not None else unpooled

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            clusters=self.clusters,
            num_layers=self.num_layers,
            activation=self.activation,
            residual=self.residual,
        )
        return config


def build_gnn(name, units, num_layers, clusters=16, activation="relu", residual=False):
    """The graph network named by `name`: a layer `[nodes, adjacency] -> nodes`, or None.

    `"none"` is the paper's "CNN only" row: keypoint features go straight back to the CNN.
    """
    if name == "gcn":
        return GCNStack(units, num_layers, activation, residual=residual, name="gnn")
    if name == "diffpool":
        return DiffPoolUnpool(units, clusters, num_layers, activation, residual=residual, name="gnn")
    if name == "none":
        return None
    raise ValueError(f"gnn={name!r} is not one of {', '.join(map(repr, GNN_NAMES))}")


def needs_normalized_adjacency(name):
    """Whether the named GNN expects a GCN-normalised adjacency from the interconnect."""
    return name == "gcn"
