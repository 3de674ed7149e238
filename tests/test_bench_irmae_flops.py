"""``benchmarks/bench_irmae_flops.py`` counts what a training step computes.

The count (``torch.utils.flop_counter``) is checked against the architecture by hand (the module
doc of ``factorflow/autoencoder/model.py``), multiply-adds of one 1x32x32 image, "mnist"
decoder, latent 128:

- encoder: conv 1->32 to 16x16 (16^2 * 32 * 1 * 4^2), 32->64 to 8x8, 64->128 to 4x4, 128->256
  to 2x2 (each 2,097,152), linear 1024 -> 128;
- l layers of 128 x 128;
- decoder: linear 128 -> 8192, transposed convs 128->64 from 8x8 and 64->32 from 16x16 (each
  8,388,608), 1x1 32 -> 1 at 32x32.

A step is the forward pass, the gradient with respect to each layer's input (all but the first
layer's, whose input is the data) and to each weight: 3 x forward - the first layer's forward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_irmae_flops as bif  # noqa: E402

FIRST = 16 * 16 * 32 * 1 * 16
ENCODER = FIRST + 3 * 2_097_152 + 1024 * 128
DECODER = 128 * 8192 + 2 * 8_388_608 + 32 * 32 * 32 * 1


@pytest.mark.parametrize("l", [0, 2])
def test_step_operations_equal_the_architectures_multiply_adds(l):
    forward = ENCODER + l * 128 * 128 + DECODER
    per_image = 2 * (3 * forward - FIRST)  # a multiply-add is 2 operations
    assert bif.step_flops("mnist", 1, l, batch=2) == 2 * per_image


def test_measurement_operations_are_an_encoder_and_a_full_forward_pass():
    assert bif.measure_flops_per_image("mnist", 1, 0) == 2 * (ENCODER + ENCODER + DECODER)
