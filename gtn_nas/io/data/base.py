"""The dataset record every loader returns, and the per-dataset constants the paper uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Per-channel mean/std of x/255, the paper's normalisation (gtn-spec 1.9).
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
# Paper's train/validation sizes; the rest of the official training set is validation.
TRAIN_SIZES = {"mnist": 50_000, "fashion_mnist": 50_000, "cifar10": 45_000}
DATASETS = tuple(NORMALISATION)
# What a GTN of each data set generates and classifies: known without reading the data.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # [N, H, W, C] uint8
    labels: np.ndarray  # [N] int32

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    validation: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    source: str  # where the data was read from, for logs and error messages

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]
