"""Model factories of the tests (`--model factories:NAME`; this directory is on sys.path under
pytest): hostile ones, one with dropout, one with LayerNorm, one whose module a test keeps."""

import math
import threading

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


class _Raising(nn.Linear):
    """A linear layer whose forward raises what a user's module might (not a torch error)."""

    def forward(self, x):
        raise KeyError("no such feature")


def forward_raises_keyerror(depth, width, in_shape, classes):
    return nn.Sequential(nn.Flatten(), _Raising(math.prod(in_shape), classes))


class _Dict(nn.Linear):
    def forward(self, x):
        return {"logits": super().forward(x)}


def returns_dict(depth, width, in_shape, classes):
    return nn.Sequential(nn.Flatten(), _Dict(math.prod(in_shape), classes))


class _Locked(nn.Linear):
    """A module holding what deepcopy cannot copy."""

    def __init__(self, *args):
        super().__init__(*args)
        self.lock = threading.Lock()


def holds_lock(depth, width, in_shape, classes):
    return nn.Sequential(nn.Flatten(), _Locked(math.prod(in_shape), classes))


_CACHED: list[nn.Module] = []


def cached(depth, width, in_shape, classes):
    """One module built once and returned at every call: every seed would get its weights."""
    if not _CACHED:
        _CACHED.append(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), classes)))
    return _CACHED[0]


def constant(depth, width, in_shape, classes):
    """A new module at every call, but weights that ignore torch's random state (as a loaded
    checkpoint's do): the seeds differ in data order and dropout only."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), classes))
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(0.01)
    return module


def constant_head(depth, width, in_shape, classes):
    """Constant weights in one layer only: the members still differ."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                           nn.Linear(width, classes))
    with torch.no_grad():
        module[3].weight.fill_(0.01)
    return module


class _RandomFeatures(nn.Module):
    """A random projection kept as a buffer (drawn per seed), a head of zeros."""

    def __init__(self, n, width, classes):
        super().__init__()
        self.register_buffer("proj", torch.randn(n, width) / math.sqrt(n))
        self.head = nn.Linear(width, classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(torch.relu(x.flatten(1) @ self.proj))


def random_features(depth, width, in_shape, classes):
    """Equal parameters at every seed, but a buffer drawn from torch's random state."""
    return _RandomFeatures(math.prod(in_shape), width, classes)
