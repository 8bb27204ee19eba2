"""Rows of a tensor by index, with a backward that sums in a fixed order."""

from __future__ import annotations

from torch import Tensor


def rows(tensor: Tensor, index: Tensor) -> Tensor:
    """`tensor[index]` along the first dimension, for tensors in the autograd graph.

    Its backward (index_add) sums the gradients of a repeated index in the index's order.
    `tensor[index]`'s backward (an accumulating index_put) sums them on the CPU with parallel
    atomic adds, in an order the machine's load decides: two runs of one seed on a busy machine
    drifted apart from their second step.
    """
    return tensor.index_select(0, index)
