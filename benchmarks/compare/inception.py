"""A random-weight FID Inception of the real architecture (torch-fidelity's), for the tests and
benchmarks that cannot download the real weights: the same layers, the same cost, the same
state-dict file format as the ``inception-v3-fid`` artifact."""

from __future__ import annotations

import io
from pathlib import Path


def save_random_inception(path: Path, seed: int = 7) -> Path:
    """Write a random-init FID Inception state dict to ``path``, with a variance-keeping init
    so that the 2048 pool features do not vanish; the global RNG is left as it was."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, state_dict, *a, **k: None  # keep the random init
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
        torch.random.set_rng_state(state)
    torch.save(model.state_dict(), path)
    return path
