"""One score vector per image from whatever a model's image forward returns: logits or pooled features as they
are, or the readout of a feature extractor that hands back its token sequence or its last feature map."""
from __future__ import annotations

import torch


def output_vector(tower, output: torch.Tensor) -> torch.Tensor:
    """One score vector per image: the output itself, or for feature extractors that hand back their token
    sequence (batch, tokens, dim), the token their readout reads (CLS) or the mean of the patch tokens."""
    if output.dim() == 4:  # a feature extractor's (batch, channels, h, w) map: one score per channel
        return output.mean(dim=(2, 3))
    if output.dim() != 3:
        return output
    if getattr(tower, "readout", "cls") == "mean":
        return output[:, getattr(tower, "num_prefix_tokens", 0):].mean(dim=1)
    if getattr(tower, "num_prefix_tokens", 0) == 0:
        return output.mean(dim=1)
    return output[:, 0]
