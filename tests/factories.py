"""Model factories of the tests (`--model factories:NAME`; this directory is on sys.path under
pytest): hostile ones, one with dropout, one with LayerNorm, one whose module a test keeps."""

import torch
from torch import nn

KEPT: list[nn.Module] = []  # every module `kept` returned: the user's objects, to compare


def raises(depth, width, in_shape, classes):
    raise RuntimeError("boom")


def not_a_module(depth, width, in_shape, classes):
    return 3


def no_parameters(depth, width, in_shape, classes):
    return nn.Flatten()


class ItemInForward(nn.Module):
    """Branches on a tensor's value: vmap cannot batch it."""

    def __init__(self, n, classes):
        super().__init__()
        self.linear = nn.Linear(n, classes)

    def forward(self, x):
        if x.sum().item() > 0:
            return self.linear(x)
        return -self.linear(x)


def uses_item(depth, width, in_shape, classes):
    return ItemInForward(in_shape[0], classes)


def wrong_outputs(depth, width, in_shape, classes):
    return nn.Linear(in_shape[0], classes + 1)


def dropout(depth, width, in_shape, classes):
    return nn.Sequential(nn.Linear(in_shape[0], width), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(width, classes))


def layernorm(depth, width, in_shape, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(in_shape).numel(), width),
                         nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, classes))


def kept(depth, width, in_shape, classes):
    """A module the caller keeps a reference to (as a user building it elsewhere would)."""
    module = nn.Sequential(nn.Linear(in_shape[0], width), nn.BatchNorm1d(width), nn.ReLU(),
                           nn.Linear(width, classes))
    KEPT.append(module)
    return module
