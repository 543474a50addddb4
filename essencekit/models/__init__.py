"""Network definitions in plain PyTorch that load the published checkpoints unchanged."""
