"""Shared test settings: one torch thread (the suite's tensors are tiny; on a loaded 2-core
machine a second intra-op thread makes small matrix products an order of magnitude slower)."""

import torch

torch.set_num_threads(1)
