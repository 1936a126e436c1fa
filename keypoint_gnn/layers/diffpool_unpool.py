"""DiffPool to a coarse graph and back (paper §7)."""
from keypoint_gnn import gnn, ops, rules
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers.gcn_stack import GCNStack


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class DiffPoolUnpool(keras.layers.Layer):
    """DiffPool to k clusters, graph convolutions on the coarse graph, then unpooling.

    Ying et al. 2018 (Spektral `DiffPool`), paper §7:

        S = softmax(GNN_pool(A, X)),   X_c = S^T GNN_embed(A, X),   A_c = S^T A S

    then L - 1 GCN layers on (X_c, A_c); finally X' = S X_c, so every keypoint gets a feature
    vector back for the graph-to-CNN interconnect. DiffPool adds its link prediction and
    entropy losses to the model (`add_loss`), each scaled by `loss_weight`:

        loss_weight * mean_b ||A - S S^T||_F,   loss_weight * mean_b mean_i (-sum_k S_ik log S_ik)

    Args:
      units: channels.
      clusters: k, nodes of the coarse graph (at most N).
      num_layers: total graph layers, the DiffPool layer included.
      activation: of every layer.
      residual: add a linear projection of each node's input features to its unpooled output,
        so nodes of one cluster are not reduced to the same vector.
      loss_weight: >= 0, the factor on both auxiliary losses (1: Spektral's, unweighted; 0:
        none, the assignment then learns from the task loss alone).

    Input shape:
      `[nodes (B, N, F), adjacency (B, N, N)]`, adjacency *not* normalised (DiffPool adds self
      loops and normalises internally).

    Output shape:
      `(B, N, units)`.

    Example:

    >>> layer = DiffPoolUnpool(units=8, clusters=3, num_layers=2)
    >>> layer([tf.ones([2, 6, 4]), tf.ones([2, 6, 6])]).shape
    TensorShape([2, 6, 8])
    """

    def __init__(self, units, clusters, num_layers=2, activation="relu", residual=False,
                 loss_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("units", units)
        rules.check_positive_int("clusters", clusters)
        rules.check_positive_int("num_layers", num_layers)
        rules.check_non_negative_number("loss_weight", loss_weight)
        self.units = units
        self.clusters = clusters
        self.num_layers = num_layers
        self.activation = activation
        self.residual = residual
        self.loss_weight = loss_weight
        self.pool = gnn.diff_pool(clusters, units, activation, "diffpool", self.dtype_policy,
                                  loss_weight=loss_weight)
        self.coarse = (
            GCNStack(units, num_layers - 1, activation, residual=residual, name="coarse_gcn",
                     dtype=self.dtype_policy)
            if num_layers > 1 else None
        )
        self.skip = keras.layers.Dense(units, name="skip", dtype=self.dtype_policy) if residual else None

    @classmethod
    def from_section(cls, graph_config, **kwargs):
        """The layer a `ModelConfig.graph` section describes."""
        return cls(graph_config.units, graph_config.diffpool_clusters, graph_config.layers,
                   residual=graph_config.residual,
                   loss_weight=graph_config.diffpool_loss_weight, **kwargs)

    def build(self, input_shape):
        num_nodes = input_shape[0][1]
        if num_nodes is not None and self.clusters > num_nodes:
            raise ValueError(f"clusters={self.clusters} exceeds the {num_nodes} nodes of the graph")
        super().build(input_shape)

    def call(self, inputs):
        nodes, adjacency = inputs
        coarse_nodes, coarse_adjacency, selection = self.pool([nodes, adjacency])
        if self.coarse is not None:
            coarse_nodes = self.coarse(
                [coarse_nodes, ops.gcn_normalize(coarse_adjacency, add_self_loops=True)])
        unpooled = tf.matmul(selection, coarse_nodes)
        return unpooled + self.skip(nodes) if self.skip is not None else unpooled

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, clusters=self.clusters, num_layers=self.num_layers,
                      activation=self.activation, residual=self.residual,
                      loss_weight=self.loss_weight)
        return config
