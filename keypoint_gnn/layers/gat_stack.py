"""A stack of graph attention layers (beyond the paper)."""
from keypoint_gnn import gnn, rules
from keypoint_gnn._backend import keras
from keypoint_gnn.layers.gcn_stack import GCNStack


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GATStack(GCNStack):
    """A stack of L graph attention layers (Veličković et al. 2018, Spektral `GATConv`), beyond
    the paper, in place of §7's GCN.

        e^h_ij = LeakyReLU_0.2(a_self^h . W^h x_i + a_neigh^h . W^h x_j)
        alpha^h_ij = softmax_j(e^h_ij) over the j with A_ij != 0, and j = i
        X^(l+1)_i = act(mean_h sum_j alpha^h_ij W^h x_j + b)

    H heads per layer, averaged, so every layer has `units` channels; no attention dropout.
    The adjacency is only a mask: its values are not used. The keypoint graph of `CNNToGraph`
    (1 / (1 + distance), nonzero for every pair) therefore lets each keypoint attend to all N
    keypoints, its attention learned from the features alone (distances enter through
    `position_features`); each layer computes B x H x N x N attention logits.
    `GCNStack` with attention layers: with `residual=True`, X^(0) = X W_in (a linear
    projection to `units`) and X^(l+1) = X^(l) + GAT(X^(l)).

    Args:
      units: channels of every layer.
      num_layers: L.
      attn_heads: H, attention heads of every layer.
      activation: of every layer.
      residual: project the input to `units`, then add each layer's input to its output.

    Input shape:
      `[nodes (B, N, F), adjacency]`: batch mode `(B, N, N)`, or mixed mode, one `(N, N)` dense
      or sparse adjacency shared by the batch; *not* normalised (nonzero entries are edges).

    Output shape:
      `(B, N, units)`.

    Example:

    >>> stack = GATStack(units=16, num_layers=2, attn_heads=2, residual=True)
    >>> stack([tf.ones([2, 5, 8]), tf.ones([2, 5, 5])]).shape
    TensorShape([2, 5, 16])
    """

    def __init__(self, units, num_layers, attn_heads=4, activation="relu", residual=False,
                 **kwargs):
        rules.check_positive_int("attn_heads", attn_heads)
        self.attn_heads = attn_heads  # read by `_conv` while the parent builds the stack
        super().__init__(units, num_layers, activation=activation, residual=residual, **kwargs)

    def _conv(self, index):
        return gnn.gat_conv(self.units, self.attn_heads, self.activation, f"gat_{index}",
                            self.dtype_policy)

    @classmethod
    def from_section(cls, graph_config, **kwargs):
        """The stack a `ModelConfig.graph` section describes."""
        return cls(graph_config.units, graph_config.layers, attn_heads=graph_config.attn_heads,
                   residual=graph_config.residual, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(attn_heads=self.attn_heads)
        return config
