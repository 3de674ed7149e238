"""Shared test settings: one torch thread (the suite's tensors are tiny; on a loaded 2-core
machine a second intra-op thread makes small matrix products an order of magnitude slower), and
a small synthetic image-data factory shared by the natural-rank tests."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_images():
    """A factory of small synthetic ``ImageData`` (4x5 images in [0, 1], labels 0..9 in turn),
    seeded: ``tiny_images(n_train=40, n_test=20, seed=0)``."""
    from factorflow.data.images import ImageData

    def make(n_train: int = 40, n_test: int = 20, seed: int = 0) -> ImageData:
        g = torch.Generator().manual_seed(seed)
        return ImageData(
            train_images=torch.rand(n_train, 4, 5, generator=g),
            train_labels=torch.arange(n_train) % 10,
            test_images=torch.rand(n_test, 4, 5, generator=g),
            test_labels=torch.arange(n_test) % 10,
            dataset="synthetic",
            source="test",
        )

    return make
