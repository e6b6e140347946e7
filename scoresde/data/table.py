"""The data-set table: every data set the package knows, with its facts in one place.

``DATASETS[name]`` gives the shape of one example, the number of integer levels per dimension
(``None`` for the continuous toy sets), the splits and the reader. The config rules, the model
builder, the data loader and the sample program all read these facts here.

Readers: an integer data set's ``reader(root, split, n)`` returns ``(x_int (N, *shape) int64,
labels (N,) int64)`` read from its files (``root`` is unused by digits, which scikit-learn
embeds); a toy set's ``reader(n, generator)`` returns ``(x (n, 2) float32, labels or None)``
drawn afresh (see :func:`scoresde.data.loader.load_dataset`, which seeds it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scoresde.data import files as data_files
from scoresde.data import toy
from scoresde.util.checks import check_choice
from scoresde.util.choices import SPLITS

__all__ = ["DatasetInfo", "DATASETS", "DATASET_NAMES", "TOY_NAMES", "dataset_info"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple
    levels: int | None  # integer levels per dimension; None: continuous (toy) data
    reader: Callable
    splits: tuple = SPLITS
    classes: int | None = None  # number of class labels the reader yields; None: no labels

    @property
    def is_toy(self) -> bool:
        return self.levels is None


DATASETS: dict[str, DatasetInfo] = {
    **{name: DatasetInfo(name, (2,), None, draw, classes=toy.TOY_CLASSES[name]) for name, draw in toy.TOY_SETS.items()},
    "digits": DatasetInfo("digits", (1, 8, 8), 17, data_files.read_digits, classes=10),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 256, data_files.read_mnist, classes=10),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 256, data_files.read_cifar10, classes=10),
}
DATASET_NAMES = tuple(DATASETS)
TOY_NAMES = tuple(name for name, info in DATASETS.items() if info.is_toy)


def dataset_info(name: str) -> DatasetInfo:
    """The table's row for ``name``; ``ValueError`` naming the known data sets otherwise."""
    return DATASETS[check_choice("dataset", name, DATASET_NAMES)]
