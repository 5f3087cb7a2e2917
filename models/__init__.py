"""clipscope models: load any supported CLIP / ViT / CNN, wrap it in a family adapter, capture by canonical name.

    from models import load_model
    model = load_model("bundled:mini-clip")
    with model.capture(["blocks.*.attn.pattern"]) as cache:
        model.encode_image(model.pixels(image))
"""
from models.adapters.base import ModelAdapter
from models.adapters.capture import ActivationCache, Capture
from models.adapters.clip import CLIPAdapter
from models.adapters.cnn import CNNAdapter
from models.adapters.vit import ViTAdapter
from models.errors import (
                           CaptureError,
                           ClipscopeModelError,
                           ModelIdError,
                           ModelNotAllowedError,
                           ModelUnavailableOfflineError,
                           PickledWeightsError,
                           UnknownArchitectureError,
)
from models.model_ids import ModelId, parse_model_id
from models.preprocess import Preprocess
from models.registry import clear_cache, load_model
from models.world import bundled_eval, shapes

__all__ = [
    "ActivationCache", "CLIPAdapter", "CNNAdapter", "Capture", "CaptureError", "ClipscopeModelError", "ModelAdapter",
    "ModelId", "ModelIdError", "ModelNotAllowedError", "ModelUnavailableOfflineError", "PickledWeightsError",
    "Preprocess", "UnknownArchitectureError", "ViTAdapter", "bundled_eval", "clear_cache", "load_model",
    "parse_model_id", "shapes",
]
