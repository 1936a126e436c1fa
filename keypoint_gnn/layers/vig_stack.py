"""Vision GNN blocks over the keypoint nodes, beyond the paper."""
from keypoint_gnn import ops, registry, rules
from keypoint_gnn._backend import keras
from keypoint_gnn.layers.drop_path import DropPath


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class ViGStack(keras.layers.Layer):
    """Vision GNN blocks (Han et al. 2022, "Vision GNN: An Image is Worth Graph of Nodes") over
    the keypoint nodes, beyond the paper: a graph built from the nodes' own features in every
    block instead of the fixed distance graph.

        X^(0) = X W_in + b_in, then per block l:
        Grapher:  H = BN(X W_1);  H' = conv(H, kNN(H, p));  X <- X + DropPath(BN(H' W_2))
        FFN:      X <- X + DropPath(BN(GELU(BN(X W_3)) W_4))

    kNN(H, p) joins each node to its k nearest other nodes by the squared distance between
    L2-normalised rows of H plus `position_weight * |p_i - p_j|^2` (ViG's relative-position
    term; `ops.knn_indices`), rebuilt in every block from the features entering its graph conv,
    every `dilation`-th of the k * dilation nearest. conv: `MaxRelativeConv` ("max_relative",
    ViG's) or `EdgeConv` ("edge"), GELU, 2 x units channels (ViG's widths; for "edge" GELU acts
    per edge, before the maximum, as in ViG). W_3: 4 x units channels. Simpler than ViG: k, the
    dilation and the drop-path rate are the same in every block (ViG grows k from 9 to 18, the
    dilation with depth, and the drop-path rate linearly from 0).

    Args:
      units: channels of the nodes between blocks (and of the output).
      num_layers: blocks, each a Grapher and an FFN.
      k: neighbours per node (k * dilation below the node count N).
      dilation: of the kNN graph, >= 1.
      conv: "max_relative" or "edge".
      drop_path: per-sample rate in [0, 1) of dropping each residual branch in training.
      position_weight: weight >= 0 of the squared position distance in the kNN ranking.

    Input shape:
      `[nodes (B, N, F), adjacency, positions (B, N, 2)]`: the adjacency is ignored (ViG builds
      its own graphs); positions (y, x) normalised to [0, 1]. `[nodes, adjacency]` alone ranks
      by features only.

    Output shape:
      `(B, N, units)`.

    Example:

    >>> stack = ViGStack(units=16, num_layers=2, k=3)
    >>> nodes, positions = tf.ones([2, 6, 8]), tf.random.uniform([2, 6, 2])
    >>> stack([nodes, tf.eye(6, batch_shape=[2]), positions]).shape
    TensorShape([2, 6, 16])
    """

    def __init__(self, units, num_layers, k=8, dilation=1, conv="max_relative", drop_path=0.0,
                 position_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("units", units)
        rules.check_positive_int("num_layers", num_layers)
        rules.check_knn(k, dilation)
        rules.check_choice("conv", conv, tuple(registry.VIG_CONVS))
        rules.check_rate("drop_path", drop_path)
        rules.check_non_negative_number("position_weight", position_weight)
        self.units = units
        self.num_layers = num_layers
        self.k = k
        self.dilation = dilation
        self.conv = conv
        self.drop_path = drop_path
        self.position_weight = position_weight
        dtype = self.dtype_policy

        def dense(width, name, use_bias=False):
            return keras.layers.Dense(width, use_bias=use_bias, name=name, dtype=dtype)

        def norm(name):
            return keras.layers.BatchNormalization(momentum=0.9, name=name, dtype=dtype)

        blocks = range(num_layers)
        conv_class = registry.vig_conv_class(conv)
        self.projection = dense(units, "projection", use_bias=True)
        self.grapher_in = [dense(units, f"grapher{i}_in") for i in blocks]
        self.grapher_in_norm = [norm(f"grapher{i}_in_bn") for i in blocks]
        self.graph_convs = [conv_class(2 * units, activation="gelu", name=f"grapher{i}_conv",
                                        dtype=dtype) for i in blocks]
        self.grapher_out = [dense(units, f"grapher{i}_out") for i in blocks]
        self.grapher_out_norm = [norm(f"grapher{i}_out_bn") for i in blocks]
        self.ffn_in = [dense(4 * units, f"ffn{i}_in") for i in blocks]
        self.ffn_in_norm = [norm(f"ffn{i}_in_bn") for i in blocks]
        self.ffn_out = [dense(units, f"ffn{i}_out") for i in blocks]
        self.ffn_out_norm = [norm(f"ffn{i}_out_bn") for i in blocks]
        self.drop_paths = [DropPath(drop_path, name=f"drop_path{i}", dtype=dtype)
                           for i in range(2 * num_layers)]

    @classmethod
    def from_section(cls, graph_config, **kwargs):
        """The stack a `ModelConfig.graph` section describes."""
        return cls(graph_config.units, graph_config.layers, k=graph_config.knn,
                   dilation=graph_config.knn_dilation, conv=graph_config.vig_conv,
                   drop_path=graph_config.drop_path,
                   position_weight=graph_config.position_weight, **kwargs)

    def build(self, input_shape):
        rules.check_knn(self.k, self.dilation, input_shape[0][1])
        super().build(input_shape)

    def call(self, inputs, training=None):
        nodes, positions = inputs[0], (inputs[2] if len(inputs) > 2 else None)
        x = self.projection(nodes)
        for i in range(self.num_layers):
            h = self.grapher_in_norm[i](self.grapher_in[i](x), training=training)
            neighbours = ops.knn_indices(h, self.k, self.dilation, positions,
                                         self.position_weight)
            h = self.graph_convs[i]([h, neighbours])
            h = self.grapher_out_norm[i](self.grapher_out[i](h), training=training)
            x = x + self.drop_paths[2 * i](h, training=training)
            h = self.ffn_in_norm[i](self.ffn_in[i](x), training=training)
            h = keras.activations.gelu(h)
            h = self.ffn_out_norm[i](self.ffn_out[i](h), training=training)
            x = x + self.drop_paths[2 * i + 1](h, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, num_layers=self.num_layers, k=self.k,
                      dilation=self.dilation, conv=self.conv, drop_path=self.drop_path,
                      position_weight=self.position_weight)
        return config
