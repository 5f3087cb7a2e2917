"""The common face of every family adapter (clip | vit | cnn): hook names, capture, preprocessing, device."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence

import torch
from PIL import Image
from torch import nn

from models.adapters import interventions
from models.adapters.attention import AttentionSite
from models.adapters.capture import ATTENTION_VALUES, Capture, HookPoint, expand_names
from models.preprocess import Preprocess


class ModelAdapter:
    """Wraps a native model (never a re-implementation) and names its insides with one vocabulary.

    Subclasses fill ``points`` (canonical name -> HookPoint) and ``sites`` (``blocks.N.attn`` -> AttentionSite).
    """

    family: str = ""

    def __init__(self, model_id: str, backend: str, module: nn.Module, preprocess: Preprocess,
                 device: torch.device, dtype: torch.dtype):
        self.model_id = model_id
        self.backend = backend
        self.module = module.eval()
        self.preprocess = preprocess
        self.device = device
        self.dtype = dtype
        self.points: dict[str, HookPoint] = {}
        self.sites: dict[str, AttentionSite] = {}
        self._grad_captures = 0
        # one forward (or capture) at a time per model: hooks live on modules shared by every user of the app
        self.lock = threading.RLock()

    # -- naming ---------------------------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every canonical name this model can capture, in forward order (``module.<path>`` names come on top)."""
        names = list(self.points)
        for site_name in self.sites:
            names.extend(f"{site_name}.{value}" for value in ATTENTION_VALUES)
        return names

    def capture(self, names: Iterable[str] | str, grad: bool = False) -> Capture:
        """Record the named tensors during the forwards run inside the ``with`` block.

        ``names`` are canonical names or globs (``blocks.*.attn.pattern``), or ``module.<path>`` for any native
        submodule's output. With ``grad=True`` the forward runs with autograd on and ``cache.grad(name)`` holds
        d(loss)/d(tensor) after ``backward()``.
        """
        module_names = {name for name, _ in self.module.named_modules() if name}
        chosen = expand_names(names, self.hook_names(), module_names)
        points = dict(self.points)
        for name in chosen:
            if name.startswith("module."):
                points[name] = HookPoint(self.module.get_submodule(name[len("module."):]))
        on_enter = on_exit = None
        if grad:
            def on_enter():
                self._grad_captures += 1

            def on_exit():
                self._grad_captures -= 1
        return Capture(chosen, points, self.sites, grad=grad, on_enter=on_enter, on_exit=on_exit, lock=self.lock)

    # -- interventions: the same shape as capture (see models/adapters/interventions.py) ---------------------------
    def intervention_names(self) -> list[str]:
        """Every name ``ablate`` takes: the hook points a forward runs through and ``blocks.N.attn.head.H`` for each
        head (CNN channels, ``stages.S.channel.C``, are accepted but not listed)."""
        return interventions.intervention_names(self)

    def ablate(self, names: Iterable[str] | str, mode: str = "zero", reference=None,
               rows: dict | None = None) -> interventions.Ablation:
        """Run every forward inside the ``with`` block with the named parts zeroed (``mode="zero"``) or replaced by
        their mean over ``reference`` images (``mode="mean"``, per token position); heads
        (``blocks.N.attn.head.H``) are removed before the output projection. ``rows`` (name -> bool mask over the
        batch) ablates a name in some batch rows only. The model is restored exactly on exit, also on error."""
        return interventions.Ablation(self, names, mode=mode, reference=reference, rows=rows)

    def patch(self, sources: dict, tokens: Sequence[int] | None = None) -> interventions.Patch:
        """Run every forward inside the ``with`` block with the named hook points replaced by another image's
        (``{name: ActivationCache | dict | tensor}``), at every token or at the ``tokens`` indices."""
        return interventions.Patch(self, sources, tokens=tokens)

    @contextlib.contextmanager
    def gradients(self):
        """Run the model with autograd on inside this block, for attribution code that calls backward itself
        (holding the model's lock: other threads wait until the block ends)."""
        with self.lock:
            self._grad_captures += 1
            try:
                yield
            finally:
                self._grad_captures -= 1

    def run_context(self) -> contextlib.AbstractContextManager:
        """Autograd on inside a ``grad=True`` capture or ``gradients()`` block, off otherwise."""
        return torch.enable_grad() if self._grad_captures else torch.no_grad()

    # -- inputs ---------------------------------------------------------------------------------------------------
    def pixels(self, images: Image.Image | Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels on the model's device and dtype (tensors are taken as already preprocessed)."""
        tensor = images if torch.is_tensor(images) else self.preprocess(images)
        return tensor.to(self.device, self.dtype)

    # -- capabilities: what viz/ and ui/ ask instead of a family or backend ------------------------------------------
    class_names: list[str] = []      # the classifier's output names; empty for feature extractors and CLIP
    has_text: bool = False           # is there a text tower (encode_text, tokenize, logits)?
    probability: str = "softmax"     # how output scores become probabilities: "softmax" over outputs, or "sigmoid"
    # what the model was trained on, in one line, where it knows only a narrow world (clipscope's bundled models);
    # None for real checkpoints, whose training data is broad and told by their own model cards
    trained_on: str | None = None

    @property
    def image_tower(self) -> ModelAdapter:
        """The adapter of the image side: the model itself, or a CLIP's image tower."""
        return self

    @property
    def has_attention(self) -> bool:
        """Does the image tower have attention layers the attention views can read?"""
        return any(not name.startswith("text.") for name in self.image_tower.sites)

    @property
    def has_feature_maps(self) -> bool:
        """Does the image tower have spatial stages (batch, channels, h, w) the CNN views can read?"""
        return any(name.startswith("stages.") for name in self.image_tower.points)

    def token_mixers(self) -> dict[nn.Module, tuple[int, int, int] | None]:
        """Modules that move grid cells in ways a receptive-field trace cannot follow op by op (window attention,
        patch merging) and the window (kernel, stride, padding) bounding what each cell reads; none by default."""
        return {}

    def run_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image forward whose output the model is judged by: logits, features, or a CLIP image embedding."""
        return self.image_tower.forward(pixels)

    def probabilities(self, scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Scores (logits) as the probabilities the model was trained with: softmax, or independent sigmoids."""
        return scores.sigmoid() if self.probability == "sigmoid" else scores.softmax(dim=dim)

    def output_label(self, index: int) -> str:
        """The name of output ``index``: its class name where the model has them, else "output N"."""
        names = self.image_tower.class_names
        return names[index] if 0 <= index < len(names) else f"output {index}"

    # -- facts ----------------------------------------------------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def facts(self) -> dict:
        """What a user checks first about a loaded model."""
        return {
            "id": self.model_id,
            "family": self.family,
            "backend": self.backend,
            "class": type(self.module).__name__,
            "parameters": self.num_parameters,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "input size": "x".join(map(str, self.preprocess.size)),
            "mean": self.preprocess.mean,
            "std": self.preprocess.std,
        }
