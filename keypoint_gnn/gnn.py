"""The Spektral layers keypoint-gnn builds on; the only module that imports Spektral.

Spektral's conv layers replace `self.call` with a one-argument wrapper at construction time,
which breaks tf_keras's SavedModel export ("call() takes 1 positional argument but 2 were
given"). `plain_call` removes that instance attribute so that the class's own `call` is used.
"""
# isort: off
from keypoint_gnn._backend import keras  # noqa: F401  (selects tf_keras before Spektral loads)
from spektral.layers import DiffPool, GCNConv
# isort: on


def plain_call(layer):
    if "call" in vars(layer):
        del layer.call
    return layer


def gcn_conv(units, activation, name, dtype):
    """One Spektral `GCNConv`: act(Â X W), Â given GCN-normalised."""
    return plain_call(GCNConv(units, activation=activation, name=name, dtype=dtype))


def diff_pool(clusters, units, activation, name, dtype):
    """Spektral's `DiffPool` to `clusters` nodes, returning (X_c, A_c, S)."""
    return plain_call(DiffPool(clusters, channels=units, return_selection=True,
                               activation=activation, name=name, dtype=dtype))
