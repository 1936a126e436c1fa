"""A stack of graph convolutions (paper §7)."""
from keypoint_gnn import gnn, rules
from keypoint_gnn._backend import keras


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GCNStack(keras.layers.Layer):
    """A stack of L graph convolutions (Kipf & Welling 2017, Spektral `GCNConv`), paper §7.

        X^(l+1) = act(Â X^(l) W^(l)),   Â = D^-1/2 A D^-1/2, given normalised

    With `residual=True` (beyond the paper) X^(0) = X W_in (a linear projection to `units`)
    and X^(l+1) = X^(l) + act(Â X^(l) W^(l)). Why: the keypoint graph is dense with weights
    1/(1+d) that vary little, so each plain layer averages nearly all nodes; on the default
    model the nodes' spread fell to 6% of their mean after 4 layers and training stayed at
    chance. The skip keeps each node's own features.

    Args:
      units: channels of every layer.
      num_layers: L (the paper uses 4, 5 and 9).
      activation: of every layer.
      residual: project the input to `units`, then add each layer's input to its output.

    Input shape:
      `[nodes (B, N, F), adjacency]`: batch mode `(B, N, N)`, or mixed mode, one `(N, N)` dense
      or sparse adjacency shared by the batch (as `GridToGraph` gives); GCN-normalised.

    Output shape:
      `(B, N, units)`.

    Example:

    >>> stack = GCNStack(units=16, num_layers=2, residual=True)
    >>> stack([tf.ones([2, 5, 8]), tf.eye(5, batch_shape=[2])]).shape
    TensorShape([2, 5, 16])
    """

    def __init__(self, units, num_layers, activation="relu", residual=False, **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("units", units)
        rules.check_positive_int("num_layers", num_layers)
        self.units = units
        self.num_layers = num_layers
        self.activation = activation
        self.residual = residual
        self.convs = [self._conv(i) for i in range(num_layers)]
        self.projection = (
            keras.layers.Dense(units, use_bias=False, name="projection", dtype=self.dtype_policy)
            if residual else None
        )

    def _conv(self, index):
        """The `index`-th layer of the stack (`GATStack` makes attention layers here)."""
        return gnn.gcn_conv(self.units, self.activation, f"gcn_{index}", self.dtype_policy)

    @classmethod
    def from_section(cls, graph_config, **kwargs):
        """The stack a `ModelConfig.graph` section describes."""
        return cls(graph_config.units, graph_config.layers, residual=graph_config.residual,
                   **kwargs)

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
