"""A small ResNet as a `--model` factory: a stem, depth residual blocks with BatchNorm, a head.

Stem Conv2d(3 × 3) → BatchNorm2d → ReLU to `width` channels; each block is
x + BN(Conv(ReLU(BN(Conv(x))))) followed by ReLU; then global average pooling and a linear
head. PyTorch's default initialisation. BatchNorm trains on batch statistics and keeps running
ones per member, which evaluations use (milr evaluates in eval mode). It needs images, in_shape
(channels, height, width).

    milr estimate --model examples/resnet.py:make --depth 2 --width 16 --dataset fashion-mnist
"""

import torch
from torch import nn


class Block(nn.Module):
    """x ↦ ReLU(x + BN(Conv(ReLU(BN(Conv(x)))))), `width` channels throughout."""

    def __init__(self, width: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.branch(x))


def make(depth: int, width: int, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """A stem, depth residual blocks of `width` channels and a linear head, for images."""
    if len(in_shape) != 3:
        raise ValueError(f"resnet needs images, in_shape (channels, height, width); got "
                         f"{tuple(in_shape)}")
    return nn.Sequential(
        nn.Conv2d(in_shape[0], width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(), *(Block(width) for _ in range(depth)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))
