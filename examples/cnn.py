"""A small ConvNet as a `--model` factory: width = channels, depth = conv blocks.

Each block is Conv2d(3 × 3, padding 1) → ReLU → MaxPool2d(2) (the pooling while the image is at
least 2 × 2), then a linear head on the flattened features; PyTorch's default initialisation.
It needs images, in_shape (channels, height, width): Fashion-MNIST gives (1, 28, 28).

    milr estimate --model examples/cnn.py:make --depth 2 --width 16 --dataset fashion-mnist
"""

from torch import nn


def make(depth: int, width: int, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """depth conv blocks of `width` channels and a linear head, for images of shape in_shape."""
    if len(in_shape) != 3:
        raise ValueError(f"cnn needs images, in_shape (channels, height, width); got "
                         f"{tuple(in_shape)}")
    channels, height, width_px = in_shape
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.ReLU()]
        if min(height, width_px) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width_px = height // 2, width_px // 2
    layers += [nn.Flatten(), nn.Linear(width * height * width_px, classes)]
    return nn.Sequential(*layers)
