"""milr's own MLP as a `--model` factory: input → depth × [Linear(width), ReLU] → Linear(classes).

Initialised exactly as the built-in engine's standard-parametrisation MLP (`milr.engine.model.
init_weights`): milr builds each member under torch.manual_seed of the seed's weight stream,
and the weights are drawn here from that stream in the built-in engine's order (layer by layer,
(fan_in, fan_out) standard normals × √(gain / fan_in), gain 2 before the output layer and 1 at
it), biases zero. So `--model examples/mlp.py:make` starts from the built-in engine's weights;
it trains every tensor at one rate (the built-in engine's input layer takes --input-lr-scale).
Images are flattened.

    milr estimate --model examples/mlp.py:make --depth 2 --width 64
"""

import math

import torch
from torch import nn


def make(depth: int, width: int, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The MLP for inputs of shape in_shape (flattened) and `classes` outputs."""
    dims = [math.prod(in_shape)] + [width] * depth + [classes]
    # Drawn before any layer exists: nn.Linear's own initialisation draws from the same stream.
    draws = [torch.randn(fan_in, fan_out) * ((1.0 if i == depth else 2.0) / fan_in) ** 0.5
             for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True))]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, w in enumerate(draws):
        linear = nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(w.T)
            linear.bias.zero_()
        layers += [linear] + ([nn.ReLU()] if i < depth else [])
    return nn.Sequential(*layers)
