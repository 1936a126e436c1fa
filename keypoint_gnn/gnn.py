"""The Spektral layers keypoint-gnn builds on; the only module that imports Spektral.

Spektral's conv layers replace `self.call` with a one-argument wrapper at construction time,
which breaks tf_keras's SavedModel export ("call() takes 1 positional argument but 2 were
given"). `plain_call` removes that instance attribute so that the class's own `call` is used.

`GATConv`'s dense path (batch and mixed mode) is replaced by `MatmulGATConv`: with one attention
head and a batch of more than one graph, Spektral's einsums hit a heap corruption of TF 2.21's
oneDNN CPU kernels ("corrupted size vs. prev_size", a crash; tensorflow/tensorflow#117700).
"""
# isort: off
from keypoint_gnn._backend import keras, tf  # selects tf_keras before Spektral loads
from spektral.layers import DiffPool, GATConv, GCNConv
# isort: on
from keypoint_gnn import rules


def plain_call(layer):
    if "call" in vars(layer):
        del layer.call
    return layer


def gcn_conv(units, activation, name, dtype):
    """One Spektral `GCNConv`: act(Â X W), Â given GCN-normalised."""
    return plain_call(GCNConv(units, activation=activation, name=name, dtype=dtype))


def _swap_axes(tensor, first, second):
    perm = list(range(tensor.shape.rank))
    perm[first], perm[second] = perm[second], perm[first]
    return tf.transpose(tensor, perm)


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class MatmulGATConv(GATConv):
    """Spektral's `GATConv` (same weights, config and results), its dense attention computed
    with a 2-D matmul, sums and a same-rank batch matmul instead of Spektral's einsums, which
    crash TF 2.21's oneDNN CPU kernels with one head (see the module docstring). Its two
    attention kernels start apart: Spektral draws both from one unseeded initializer, which
    gives them identical values."""

    def build(self, input_shape):
        super().build(input_shape)
        initializer = self.attn_kernel_initializer
        fresh = initializer.__class__.from_config(initializer.get_config())
        self.attn_kernel_neighs.assign(fresh(self.attn_kernel_neighs.shape,
                                             self.attn_kernel_neighs.dtype))

    def _call_dense(self, x, a):
        if self.add_self_loops:
            a = tf.linalg.set_diag(a, tf.ones(tf.shape(a)[:-1], a.dtype))
        heads, channels = self.attn_heads, self.channels
        x = tf.tensordot(x, tf.reshape(self.kernel, [-1, heads * channels]), 1)
        x = tf.reshape(x, tf.concat([tf.shape(x)[:-1], [heads, channels]], 0))  # (..., N, H, C)
        attn_for_self = tf.reduce_sum(x * tf.transpose(self.attn_kernel_self[..., 0]), -1)
        attn_for_neighs = tf.reduce_sum(x * tf.transpose(self.attn_kernel_neighs[..., 0]), -1)
        attn_coef = (_swap_axes(attn_for_self, -2, -1)[..., :, None]
                     + _swap_axes(attn_for_neighs, -2, -1)[..., None, :])  # (..., H, N, N)
        attn_coef = tf.nn.leaky_relu(attn_coef, alpha=0.2)
        mask = tf.cast(tf.where(a == 0.0, -10e9, 0.0), attn_coef.dtype)
        attn_coef = tf.nn.softmax(attn_coef + mask[..., None, :, :], axis=-1)
        output = tf.matmul(self.dropout(attn_coef), _swap_axes(x, -3, -2))  # (..., H, N, C)
        return _swap_axes(output, -3, -2), _swap_axes(attn_coef, -3, -2)


def gat_conv(units, attn_heads, activation, name, dtype):
    """One Spektral `GATConv` (as `MatmulGATConv`) whose `attn_heads` heads are averaged (width
    `units`), with self loops and no attention dropout. Edges are where the adjacency is
    nonzero; its values are not used."""
    return plain_call(MatmulGATConv(units, attn_heads=attn_heads, concat_heads=False,
                                    dropout_rate=0.0, add_self_loops=True, activation=activation,
                                    name=name, dtype=dtype))


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class WeightedDiffPool(DiffPool):
    """Spektral's `DiffPool` with both auxiliary losses scaled by `loss_weight`.

    Spektral's `select` adds mean_b ||A_b - S_b S_b^T||_F (link prediction) and
    mean_b mean_i H(S_b,i) (entropy) with `add_loss`, unweighted; here each is
    `loss_weight` times that. Scaling the two loss functions Spektral calls (not `add_loss`)
    leaves any weight regulariser's loss as it is.
    """

    def __init__(self, k, loss_weight=1.0, **kwargs):
        super().__init__(k, **kwargs)
        rules.check_non_negative_number("loss_weight", loss_weight)
        self.loss_weight = loss_weight

    def link_prediction_loss(self, a, s):
        return self.loss_weight * DiffPool.link_prediction_loss(a, s)

    def entropy_loss(self, s):
        return self.loss_weight * DiffPool.entropy_loss(s)

    def get_config(self):
        # Spektral's DiffPool leaves its activation out of the config.
        return {**super().get_config(), "loss_weight": self.loss_weight,
                "activation": keras.activations.serialize(self.activation)}


def diff_pool(clusters, units, activation, name, dtype, loss_weight=1.0):
    """Spektral's `DiffPool` to `clusters` nodes, returning (X_c, A_c, S), its auxiliary
    losses scaled by `loss_weight`."""
    return plain_call(WeightedDiffPool(clusters, loss_weight=loss_weight, channels=units,
                                       return_selection=True, activation=activation, name=name,
                                       dtype=dtype))
