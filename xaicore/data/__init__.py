"""Datasets: the embedded digits, MNIST IDX files, and the randomized-label control."""

from xaicore.data.core import Dataset, DatasetFile, load_dataset, load_saved, randomized_labels, save_dataset
from xaicore.data.digits import load_digits28
from xaicore.data.mnist import load_mnist

__all__ = [
    "Dataset",
    "DatasetFile",
    "load_dataset",
    "load_digits28",
    "load_mnist",
    "load_saved",
    "randomized_labels",
    "save_dataset",
]
