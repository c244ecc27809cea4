"""Training items drawn from a few hundred labeled patches: balancing and augmentation.

The training loop counts samples seen, not epochs, and needs item ``i`` to be the same on every
run (:mod:`emae.train.loop`). :class:`LabeledPatchStream` turns a small labeled set into such a
stream: item ``i`` picks a sample with a generator seeded by ``(seed, i)``, then augments it.

Class imbalance (``balance``):

``"none"``, ``"weights"``
    Samples are drawn uniformly (for ``"weights"`` the loss weighs classes instead,
    :func:`class_weights`).
``"oversample"``
    A class is drawn uniformly, then one of its samples: rare classes are repeated.
``"undersample"``
    Training uses a fixed random subset with as many samples of each class as the rarest has
    (imbalanced-learn's ``RandomUnderSampler``).
``"artificial"``
    A class is drawn uniformly; for a class named like one of the synthetic artifact kinds
    (:data:`emae.synth.artifacts.ARTIFACT_TYPES`), half of its items are a clean sample with that
    artifact drawn on it (clipped to [0, 1] first), the other half its real samples.

Augmentation (``augment=True``): flips and 90-degree rotations (EM has no preferred
orientation; ``orientation="fixed"`` replaces them with shifts of up to 1/8 of the patch, for
classes defined by their orientation, such as digits), contrast and brightness jitter, and
Gaussian noise.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from emae.errors import EmaeError
from emae.synth.artifacts import INJECTORS, inject

Balance = Literal["none", "weights", "oversample", "undersample", "artificial"]
BALANCES: tuple[str, ...] = ("none", "weights", "oversample", "undersample", "artificial")


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequencies, scaled so the weighted samples still sum to N: ``(K,)`` float32.

    A class absent from ``labels`` gets weight 0.
    """
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def augment(patch: np.ndarray, rng: np.random.Generator, orientation: str = "any") -> np.ndarray:
    """A random flip / 90-degree rotation (``orientation="any"``) or a shift of up to 1/8 of
    the side, reflected at the border (``"fixed"``), contrast and brightness jitter, and mild
    noise.

    ``patch`` is ``(P, P)`` float32, normalized; returns a new ``(P, P)`` float32 array.
    """
    if orientation == "any":
        out = np.rot90(patch, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            out = out[:, ::-1]
    else:
        r = patch.shape[-1] // 8
        dy, dx = rng.integers(-r, r + 1, size=2)
        padded = np.pad(patch, r, mode="reflect")
        out = padded[r + dy : r + dy + patch.shape[0], r + dx : r + dx + patch.shape[1]]
    mean = float(out.mean())
    out = (out - mean) * rng.uniform(0.85, 1.15) + mean + rng.uniform(-0.05, 0.05)
    if rng.random() < 0.5:
        out = out + rng.normal(0.0, rng.uniform(0.0, 0.03), out.shape)
    return np.ascontiguousarray(out, dtype=np.float32)


class LabeledPatchStream(Dataset):
    """``n_items`` training items from labeled patches; item ``i`` is fixed for a seed.

    Parameters
    ----------
    patches
        ``(N, P, P)`` float32 normalized patches.
    labels
        ``(N,)`` int class indices in ``[0, K)``.
    classes
        The K class names (for ``balance="artificial"``).
    n_items
        Length of the stream (steps x batch size).
    seed
        Seed of the draws.
    extra
        ``(N, F)`` float32 extra features, or None.
    balance
        See the module docstring.
    augment_items
        Apply :func:`augment` to every item.
    orientation
        ``"any"`` (flips and turns keep the class) or ``"fixed"``; see :func:`augment`.
    clean_class
        Name of the artifact-free class, the canvas for ``balance="artificial"``.

    Items are ``(patch (1, P, P) float32, label int64[, extra (F,) float32])`` tensors.
    """

    def __init__(
        self,
        patches: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...],
        n_items: int,
        *,
        seed: int,
        extra: np.ndarray | None = None,
        balance: Balance = "none",
        augment_items: bool = True,
        orientation: str = "any",
        clean_class: str = "clean",
    ) -> None:
        if balance not in BALANCES:
            raise EmaeError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        if len(patches) != len(labels) or (extra is not None and len(extra) != len(labels)):
            raise EmaeError("patches, labels and extra features must have one row per sample")
        self.patches = np.ascontiguousarray(patches, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.extra = None if extra is None else np.asarray(extra, dtype=np.float32)
        self.classes, self.n_items, self.seed = tuple(classes), int(n_items), seed
        if orientation not in ("any", "fixed"):
            raise EmaeError(f"orientation must be 'any' or 'fixed', got {orientation!r}")
        self.balance, self.augment_items, self.orientation = balance, augment_items, orientation
        pool = np.arange(len(labels))
        if balance == "undersample":
            from imblearn.under_sampling import RandomUnderSampler

            sampler = RandomUnderSampler(random_state=seed)
            sampler.fit_resample(pool[:, None], self.labels)
            pool = np.sort(sampler.sample_indices_)
        self.by_class = [pool[self.labels[pool] == k] for k in range(len(self.classes))]
        self.pool = pool
        self.clean = None
        if balance == "artificial":
            if clean_class not in self.classes:
                raise EmaeError(
                    f"balance 'artificial' draws artifacts on the clean class {clean_class!r}, "
                    f"which is not among the classes {list(self.classes)}"
                )
            self.clean = self.by_class[self.classes.index(clean_class)]

    def __len__(self) -> int:
        return self.n_items

    def _pick(self, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
        """``(patch, label, source index)`` before augmentation."""
        if self.balance in ("oversample", "artificial"):
            present = [k for k, members in enumerate(self.by_class) if len(members)]
            k = present[int(rng.integers(len(present)))]
            name = self.classes[k]
            if (
                self.balance == "artificial"
                and name in INJECTORS
                and self.clean is not None
                and len(self.clean)
                and rng.random() < 0.5
            ):
                j = int(self.clean[rng.integers(len(self.clean))])
                canvas = np.clip(self.patches[j], 0.0, 1.0)
                drawn, _ = inject(canvas, name, seed=rng)
                return drawn, k, j
            j = int(self.by_class[k][rng.integers(len(self.by_class[k]))])
        else:
            j = int(self.pool[rng.integers(len(self.pool))])
        return self.patches[j], int(self.labels[j]), j

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if not 0 <= index < self.n_items:
            raise IndexError(f"index {index} out of range for {self.n_items} items")
        rng = np.random.default_rng((self.seed, index))
        patch, label, j = self._pick(rng)
        if self.augment_items:
            patch = augment(patch, rng, self.orientation)
        item = (torch.from_numpy(np.array(patch, dtype=np.float32)[None]), torch.tensor(label))
        if self.extra is not None:
            return (*item, torch.from_numpy(self.extra[j]))
        return item


def dihedral(patches: np.ndarray) -> np.ndarray:
    """The 8 flips and 90-degree rotations of every patch: ``(N, P, P) -> (8, N, P, P)``."""
    turns = [np.rot90(patches, k, axes=(-2, -1)) for k in range(4)]
    return np.ascontiguousarray(np.stack(turns + [t[..., ::-1] for t in turns]))


class FeatureStream(Dataset):
    """Training items from cached feature vectors of a frozen encoder; item ``i`` fixed by seed.

    With the encoder frozen, a patch's pooled features never change, so they are computed once
    for the 8 flips and rotations of every labeled patch (``vectors`` ``(8, N, C)``) and the head
    trains on vectors: hundreds of times faster than re-encoding every item, and the natural
    place for SMOTE, which interpolates between samples in the latent space.

    Parameters
    ----------
    vectors
        ``(V, N, C)`` float32: ``V`` augmented views of each of the ``N`` samples.
    labels
        ``(N,)`` int class indices.
    n_classes
        K.
    n_items
        Length of the stream.
    seed
        Seed of the draws.
    extra
        ``(N, F)`` float32 extra features, or None.
    balance
        ``"none"``/``"weights"`` (uniform), ``"oversample"``, ``"undersample"`` or ``"smote"``
        (imbalanced-learn's SMOTE on the views' vectors, extra features included, until every
        class has as many as the largest).

    Items are ``(vector (C [+ F],) float32, label int64)`` tensors.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        n_items: int,
        *,
        seed: int,
        extra: np.ndarray | None = None,
        balance: str = "none",
    ) -> None:
        if balance not in ("none", "weights", "oversample", "undersample", "smote"):
            raise EmaeError(f"balance {balance!r} is not available on cached features")
        views, n, _ = vectors.shape
        x = vectors.reshape(views * n, -1)
        y = np.tile(np.asarray(labels, dtype=np.int64), views)
        if extra is not None:
            x = np.concatenate([x, np.tile(np.asarray(extra, dtype=np.float32), (views, 1))], 1)
        if balance == "smote":
            from imblearn.over_sampling import SMOTE

            smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
            if smallest < 2:
                raise EmaeError("SMOTE needs at least 2 views of every class")
            smote = SMOTE(k_neighbors=min(5, smallest - 1), random_state=seed)
            x, y = smote.fit_resample(x, y)
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.int64)
        pool = np.arange(len(self.y))
        if balance == "undersample":
            from imblearn.under_sampling import RandomUnderSampler

            sampler = RandomUnderSampler(random_state=seed)
            sampler.fit_resample(pool[:, None], self.y)
            pool = np.sort(sampler.sample_indices_)
        self.pool = pool
        self.by_class = [pool[self.y[pool] == k] for k in range(n_classes)]
        self.balance, self.n_items, self.seed = balance, int(n_items), seed

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.n_items:
            raise IndexError(f"index {index} out of range for {self.n_items} items")
        rng = np.random.default_rng((self.seed, index))
        if self.balance == "oversample":
            present = [members for members in self.by_class if len(members)]
            members = present[int(rng.integers(len(present)))]
            j = int(members[rng.integers(len(members))])
        else:
            j = int(self.pool[rng.integers(len(self.pool))])
        return torch.from_numpy(self.x[j]), torch.tensor(self.y[j])
