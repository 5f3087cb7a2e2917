"""Train the bundled models on procedural scenes: ``python -m models.world.train_bundled NAME [--steps N] [--seed S]``.

NAME is mini-clip (open_clip CLIP, contrastive), mini-vit (transformers ViT classifier, fine-tuned from mini-clip's
image tower: train mini-clip first), mini-cnn (transformers ResNet classifier) or all (in that order). Each is saved
in its backend's own format under ``models/bundled/<NAME>/`` (``--out`` names that folder; with ``all`` it is the
parent of the three), with fp16 weights on disk to keep the repository small, then reloaded from disk in fp32,
measured with :mod:`models.world.bundled_eval`, and given a README model card.

Training scenes (:mod:`models.world.scenes`) come fresh every step from ``shapes.training_seed(seed, step)``
(>= 10**9), disjoint from the held-out evaluation seeds (< 10**9); mini-clip never sees the held-out compositions.
The same seed and step count give the same weights on the same machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from models.world import bundled_eval, scenes, shapes

NAMES = ("mini-clip", "mini-vit", "mini-cnn")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"

CLIP_MODEL_CFG = {
    "embed_dim": 128,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 4, "head_width": 48, "mlp_ratio": 4.0,
                   "pos_embed_type": "sin_cos_2d", "no_ln_pre": True},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
CLIP_PREPROCESS_CFG = {"size": 64, "mean": list(shapes.PIXEL_MEAN), "std": list(shapes.PIXEL_STD),
                       "interpolation": "bicubic", "resize_mode": "shortest"}


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one model."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup: int
    split: str = "train"  # "train" keeps the held-out compositions out; "any" trains on all 36 classes
    n_objects: int | None = None  # shapes per scene; None mixes one to three (see scenes.make_scene)
    smooth_stem: float = 0.0  # weight of the first-layer kernels' roughness penalty (see stem_roughness)


RECIPES = {
    "mini-clip": Recipe(steps=1900, batch_size=128, lr=1e-3, weight_decay=0.1, warmup=100),
    "mini-vit": Recipe(steps=800, batch_size=128, lr=3e-4, weight_decay=0.05, warmup=50, split="any"),
    "mini-cnn": Recipe(steps=1200, batch_size=128, lr=3e-3, weight_decay=0.05, warmup=60, split="any",
                       smooth_stem=0.5),
}


# ---------------------------------------------------------------------------------------------------- helpers

def to_pixels(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """PIL images -> normalised (B, 3, H, W) float32, exactly what the saved preprocessors produce at 64 px."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    pixels = torch.from_numpy(array).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(shapes.PIXEL_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(shapes.PIXEL_STD, device=device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def training_batch(seed: int, step: int, recipe: Recipe, image_size: int = 64) -> list[shapes.Example]:
    """Fresh training scenes for one step, from a training-only seed."""
    return scenes.make_scenes(recipe.batch_size, shapes.training_seed(seed, step), split=recipe.split,
                              n_objects=recipe.n_objects, image_size=image_size)


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings and scalars."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embed" in name or "token" in name or "logit_scale" in name or "cls" in name
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: "auto" picks it where the hardware has fast bf16 (a CUDA GPU that
    supports it, or a CPU with AVX512-BF16/AMX, where it is about 1.6x faster); weights stay fp32 either way."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, bf16: bool):
    """The mixed-precision context for forward passes (a no-op when ``bf16`` is False)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def setup(seed: int, device: str | None, threads: int | None) -> torch.device:
    """Seed everything, pick the device (CUDA when there is one) and use every CPU core for torch."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine(device: torch.device) -> str:
    """A one-line description of where training ran."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} CPU threads (of {os.cpu_count()} cores), torch {torch.__version__}"


_LOGGED = ("step", "loss", "train_acc", "lr", "elapsed_s")  # the fields train_loop always logs


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def folder_size(path: Path) -> int:
    """Bytes of the files in a folder."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def train_loop(step_fn: Callable[[int], tuple[torch.Tensor, float]], model: torch.nn.Module, recipe: Recipe,
               desc: str, log_every: int = 50, on_log: Callable[[int], dict] | None = None) -> dict:
    """Run ``recipe.steps`` optimiser steps of ``step_fn(step) -> (loss, accuracy)``; returns a loss/accuracy log.

    ``on_log(steps_done)``, if given, runs at every log point with the model in eval mode; the dict it returns is
    added to that point's history entry (e.g. a held-out accuracy measured during training)."""
    optimizer = make_optimizer(model, recipe)
    model.train()
    history, window = [], []
    start = time.perf_counter()
    bar = tqdm(range(recipe.steps), desc=desc, dynamic_ncols=True, mininterval=2.0)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        loss, accuracy = step_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append((loss.item(), accuracy))
        bar.set_postfix(loss=f"{window[-1][0]:.3f}", acc=f"{accuracy:.2f}", refresh=False)
        if (step + 1) % log_every == 0 or step + 1 == recipe.steps:
            mean_loss, mean_acc = (float(v) for v in np.mean(window, axis=0))
            entry = {"step": step + 1, "loss": round(mean_loss, 4), "train_acc": round(mean_acc, 4),
                     "lr": lr_at(step, recipe), "elapsed_s": round(time.perf_counter() - start, 1)}
            if on_log is not None:
                model.eval()
                entry.update(on_log(step + 1))
                model.train()
            history.append(entry)
            extra = "".join(f" {k} {v:.3f}" for k, v in entry.items() if k not in _LOGGED and isinstance(v, float))
            tqdm.write(f"{desc} step {step + 1}/{recipe.steps} loss {mean_loss:.4f} train-acc {mean_acc:.3f}{extra} "
                       f"({time.perf_counter() - start:.0f}s)")
            window = []
    model.eval()
    return {"wall_time_s": round(time.perf_counter() - start, 1), "history": history}


# ---------------------------------------------------------------------------------------------------- mini-clip

def write_open_clip_config(folder: Path, model_cfg: dict = CLIP_MODEL_CFG,
                           preprocess_cfg: dict = CLIP_PREPROCESS_CFG) -> None:
    """The open_clip ``local-dir`` config: model_cfg plus preprocess_cfg."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_clip(model_cfg: dict = CLIP_MODEL_CFG, preprocess_cfg: dict = CLIP_PREPROCESS_CFG,
               device: torch.device | str = "cpu"):
    """A freshly initialised open_clip CLIP built by open_clip from a ``local-dir`` config, and its tokenizer."""
    import open_clip

    with tempfile.TemporaryDirectory() as scratch:  # config only: open_clip builds a freshly initialised model
        write_open_clip_config(Path(scratch), model_cfg, preprocess_cfg)
        model = open_clip.create_model("local-dir:" + scratch, device=device)
        tokenizer = open_clip.get_tokenizer("local-dir:" + scratch)
    return model, tokenizer


def save_clip(model: torch.nn.Module, out_dir: Path, model_cfg: dict = CLIP_MODEL_CFG,
              preprocess_cfg: dict = CLIP_PREPROCESS_CFG) -> None:
    """Save a CLIP in open_clip's ``local-dir`` format: open_clip_config.json + fp16 open_clip_model.safetensors."""
    out_dir = Path(out_dir)
    write_open_clip_config(out_dir, model_cfg, preprocess_cfg)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "open_clip_model.safetensors"))


def present_class_targets(examples: list[shapes.Example], names: list[str],
                          attribute: str = "label") -> torch.Tensor:
    """(B, len(names)) target distributions: equal shares over the values of ``attribute`` ("label", "colour" or
    "shape") present in each scene, so that a two-object scene teaches both of its classes (and a class's evidence
    stays on its own object)."""
    targets = torch.zeros(len(examples), len(names))
    index = {name: i for i, name in enumerate(names)}
    for row, example in enumerate(examples):
        present = {getattr(obj, attribute) for obj in example.objects}
        for value in present:
            targets[row, index[value]] = 1.0 / len(present)
    return targets


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
              captions: list[str], negative_features: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Symmetric contrastive cross-entropy with learned temperature; identical captions count as positives of
    each other's images (the targets spread evenly over duplicates). ``negative_features`` are extra texts no
    image matches (hard negatives such as colour-swapped captions): they join the image->text softmax only.
    Returns (loss, image->text accuracy over the batch's captions)."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.T
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([ids[c] for c in captions], device=logits.device)
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    image_to_text = logits
    if negative_features is not None and len(negative_features):
        negatives = logit_scale.exp() * image_features @ F.normalize(negative_features, dim=-1).T
        image_to_text = torch.cat([logits, negatives], dim=1)
        targets_i2t = torch.cat([targets, targets.new_zeros(len(captions), negatives.shape[1])], dim=1)
    else:
        targets_i2t = targets
    loss = 0.5 * (F.cross_entropy(image_to_text, targets_i2t) + F.cross_entropy(logits.T, targets))
    accuracy = float((same[torch.arange(len(captions)), logits.argmax(dim=1)] > 0).float().mean())
    return loss, accuracy


HARD_NEGATIVE_SHARE = 0.85  # the share of eligible scenes whose step caption is the pair caption with its swap


def step_captions(examples: list[shapes.Example], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Each scene's caption for one step, and the step's hard negatives: a scene picked by ``rng`` (one draw per
    scene, share HARD_NEGATIVE_SHARE) whose first two objects differ in colour and shape is captioned "a X and a Y",
    and its colour-swapped caption becomes a negative text (which teaches binding); other scenes keep their own."""
    captions, negatives = [], []
    for example in examples:
        picked = rng.random() < HARD_NEGATIVE_SHARE
        swapped = scenes.colour_swapped_caption(example.objects) if picked else None
        captions.append(scenes.pair_caption(example.objects) if swapped is not None else example.caption)
        if swapped is not None:
            negatives.append(swapped)
    return captions, negatives


PROMPT_SET_WEIGHTS = {"label": 1.0, "colour": 0.5, "shape": 0.5}  # prompt supervision's terms (see prompt_loss)


def supervision_prompts() -> dict[str, tuple[list[str], list[str]]]:
    """The prompt sets of prompt supervision, keyed by the scene-object attribute they name: (values, prompts).
    Classes are the 30 trained compositions only ("a red star"); colours ("a red shape") and shapes ("a star")
    name one attribute, which asks the image embedding to carry each attribute on its own (the held-out
    compositions recombine attributes the model has seen)."""
    classes = scenes.trained_class_names()
    colours, shape_names = list(shapes.COLOURS), list(shapes.SHAPES)
    return {
        "label": (classes, [bundled_eval.zero_shot_prompt(*c.split(" ")) for c in classes]),
        "colour": (colours, [shapes._articles(f"a {c} shape") for c in colours]),
        "shape": (shape_names, [shapes._articles(f"a {s}") for s in shape_names]),
    }


def prompt_loss(image_features: torch.Tensor, prompt_features: dict[str, tuple[list[str], torch.Tensor]],
                examples: list[shapes.Example], logit_scale: torch.Tensor) -> torch.Tensor:
    """Prompt supervision: for each prompt set (attribute -> its values and their prompts' text features),
    cross-entropy of every image's scaled cosine similarities to the set's prompts against an equal share over
    what its scene holds (classes, colours, shapes), weighted by PROMPT_SET_WEIGHTS. It is the zero-shot
    classifier trained directly, on every image every step, alongside the contrastive loss (which sees one
    caption per image)."""
    image_features = F.normalize(image_features, dim=-1)
    loss = image_features.new_zeros(())
    for attribute, (values, features) in prompt_features.items():
        logits = logit_scale.exp() * image_features @ F.normalize(features, dim=-1).T
        targets = present_class_targets(examples, values, attribute).to(logits.device)
        loss = loss + PROMPT_SET_WEIGHTS[attribute] * F.cross_entropy(logits, targets)
    return loss


def patch_attribute_targets(examples: list[shapes.Example], attribute: str, values: list[str],
                            grid: int) -> torch.Tensor:
    """(B, grid * grid, len(values) + 1) per-patch target distributions: the share of each patch's pixels that an
    object with each value of ``attribute`` covers (its visible mask), the remainder going to background (last)."""
    index = {value: i for i, value in enumerate(values)}
    targets = np.zeros((len(examples), grid * grid, len(values) + 1), dtype=np.float32)
    for row, example in enumerate(examples):
        for obj in example.objects:
            side = obj.mask.shape[0] // grid
            coverage = obj.mask.reshape(grid, side, grid, side).mean(axis=(1, 3)).reshape(-1)
            targets[row, :, index[getattr(obj, attribute)]] += coverage
        targets[row, :, -1] = np.clip(1.0 - targets[row, :, :-1].sum(axis=1), 0.0, 1.0)
    return torch.from_numpy(targets)


class TokenLabelHead(torch.nn.Module):
    """Training-only linear read-outs of each patch token's colour and shape (or background), for token labelling:
    dense supervision on all 64 patches of every image (Jiang et al., "All Tokens Matter", 2021) teaches a small
    ViT where each object is and what it is far faster than one caption per image. Not saved with the model."""

    def __init__(self, width: int):
        super().__init__()
        self.colour = torch.nn.Linear(width, len(shapes.COLOURS) + 1)
        self.shape = torch.nn.Linear(width, len(shapes.SHAPES) + 1)


def token_label_loss(tokens: torch.Tensor, head: TokenLabelHead, examples: list[shapes.Example]) -> torch.Tensor:
    """Soft cross-entropy of the per-patch colour and shape read-outs against the masks' patch coverage."""
    grid = int(round(tokens.shape[1] ** 0.5))
    loss = tokens.new_zeros(())
    for attribute, values, linear in (("colour", list(shapes.COLOURS), head.colour),
                                      ("shape", list(shapes.SHAPES), head.shape)):
        targets = patch_attribute_targets(examples, attribute, values, grid).to(tokens.device)
        logits = linear(tokens).flatten(0, 1)
        loss = loss + F.cross_entropy(logits, targets.flatten(0, 1))
    return loss


MIMETIC_QK = (0.7, 0.7)  # mimetic initialisation: each head's W_q^T W_k ~ a Z + b I (Z ~ N(0, 1/d))
MIMETIC_VO = (0.4, 0.4)  # and the layer's W_o W_v ~ a Z - b I


def _noisy_identity(width: int, noise: float, identity: float, generator: torch.Generator) -> torch.Tensor:
    """noise x Z + identity x I, Z a (width x width) Gaussian of variance 1/width."""
    return noise * torch.randn(width, width, generator=generator) / math.sqrt(width) + identity * torch.eye(width)


@torch.no_grad()
def mimetic_init(transformer: torch.nn.Module, seed: int) -> None:
    """Mimetic initialisation of open_clip's attention blocks (Trockman & Kolter, 2023): every head's query-key
    product W_q^T W_k is the best rank-head_width approximation of a noisy identity, and each layer's value-output
    product W_o W_v that of a noisy negative identity (both as the attention of large pretrained ViTs looks). With
    the fixed 2-d sin-cos positions, attention then starts local (a token's keys are most like its neighbours'), a
    convolution-like prior that a small ViT trained for half an hour cannot afford to learn from scratch."""
    generator = torch.Generator().manual_seed(seed)
    for block in transformer.resblocks:
        attn = block.attn
        width, heads = attn.embed_dim, attn.num_heads
        head_width = width // heads
        weight = attn.in_proj_weight
        for head in range(heads):
            u, s, vh = torch.linalg.svd(_noisy_identity(width, *MIMETIC_QK, generator))
            root = s[:head_width].sqrt()
            rows = slice(head * head_width, (head + 1) * head_width)
            weight[rows] = (u[:, :head_width] * root).T                       # W_q rows of this head
            weight[width:][rows] = root[:, None] * vh[:head_width]           # W_k rows of this head
        u, s, vh = torch.linalg.svd(_noisy_identity(width, MIMETIC_VO[0], -MIMETIC_VO[1], generator))
        weight[2 * width:] = s.sqrt()[:, None] * vh                          # W_v
        attn.out_proj.weight.copy_(u * s.sqrt())                             # W_o


def train_clip(out_dir: Path, recipe: Recipe, seed: int, device: torch.device, bf16: bool) -> dict:
    """Train and save mini-clip in open_clip's local-dir format; returns facts for the model card."""
    model, tokenizer = build_clip()
    mimetic_init(model.visual.transformer, seed)
    model.to(device)
    prompt_sets = supervision_prompts()
    prompt_texts = [p for _, prompts in prompt_sets.values() for p in prompts]
    token_head = TokenLabelHead(model.visual.transformer.width).to(device)
    trained = torch.nn.ModuleDict({"clip": model, "token_head": token_head})  # what the optimiser updates
    model.visual.output_tokens = True  # training reads the patch tokens too; the saved config leaves it off

    def step_fn(step: int) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        examples = training_batch(seed, step, recipe)
        captions, negatives = step_captions(examples, np.random.default_rng([seed, step, 7]))
        texts = captions + negatives + prompt_texts
        with autocast(device, bf16):
            image_features, tokens = model.visual(to_pixels([e.image for e in examples], device))
            image_features = image_features.float()
            text_features = model.encode_text(tokenizer(texts).to(device)).float()
        start = len(captions) + len(negatives)
        loss, accuracy = clip_loss(image_features, text_features[:len(captions)], model.logit_scale, captions,
                                   text_features[len(captions):start])
        prompt_features = {}
        for attribute, (values, prompts) in prompt_sets.items():
            prompt_features[attribute] = (values, text_features[start:start + len(prompts)])
            start += len(prompts)
        loss = loss + prompt_loss(image_features, prompt_features, examples, model.logit_scale)
        loss = loss + token_label_loss(tokens.float(), token_head, examples)
        return loss, accuracy

    log = train_loop(step_fn, trained, recipe, "mini-clip")
    model.visual.output_tokens = False
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))

    save_clip(model, out_dir)
    return {"params": count_params(model), "logit_scale": float(model.logit_scale.detach().exp()), **log}


def evaluate_clip(out_dir: Path, device: torch.device) -> dict:
    """Reload mini-clip from disk through open_clip (fp32) and measure it."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(out_dir), device=device)
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(out_dir))
    model.eval()

    def encode_image(pixels: torch.Tensor) -> torch.Tensor:
        return model.encode_image(pixels.to(device))

    def encode_text(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    def prep(images) -> torch.Tensor:
        return torch.stack([preprocess(image) for image in images])

    attributes = ("colour", "shape")
    binding = bundled_eval.clip_binding_results(encode_image, encode_text, prep, n=400)
    zero_shot = bundled_eval.clip_zero_shot_accuracy(encode_image, encode_text, prep, n=720, attributes=attributes)
    held_out = bundled_eval.clip_zero_shot_accuracy(encode_image, encode_text, prep, n=360, split="held_out",
                                                    attributes=attributes)
    return {
        "zero_shot_top1": zero_shot["top1"],
        "zero_shot_n": zero_shot["n"],
        "zero_shot_worst_classes": sorted(zero_shot["per_class"].items(), key=lambda kv: kv[1])[:3],
        "held_out_compositions_top1": held_out["top1"],
        "held_out_compositions_n": held_out["n"],
        "held_out_compositions_per_class": held_out["per_class"],
        **{f"{label}_{attribute}_alone_top1": result["alone"][attribute]
           for label, result in (("trained", zero_shot), ("held_out", held_out)) for attribute in attributes},
        "binding_true_over_swapped": binding.pop("all"),
        **{f"binding_{key}": value for key, value in binding.items()},
        "text_to_image_recall@5": bundled_eval.clip_text_to_image_recall(encode_image, encode_text, prep, n=200),
        "text_to_image_recall@1": bundled_eval.clip_text_to_image_recall(encode_image, encode_text, prep, n=200,
                                                                         k=1),
        "recall_n": 200,
    }


# ---------------------------------------------------------------------------------------------------- classifiers

def _label_maps() -> tuple[dict[int, str], dict[str, int]]:
    names = shapes.class_names()
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def build_vit():
    """A small transformers ViTForImageClassification over the 36 classes."""
    from transformers import ViTConfig, ViTForImageClassification

    id2label, label2id = _label_maps()
    config = ViTConfig(image_size=64, patch_size=8, num_channels=3, hidden_size=192, num_hidden_layers=4,
                       num_attention_heads=4, intermediate_size=768, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5, num_labels=len(id2label),
                       id2label=id2label, label2id=label2id)  # open_clip's LayerNorm eps: see vit_from_clip
    return ViTForImageClassification(config)


@torch.no_grad()
def vit_from_clip(clip_dir: Path):
    """mini-vit initialised from mini-clip's image tower (the same ViT: 64 px, 8 px patches, width 192, 4 layers,
    4 heads, MLP 768, GELU), with a zero-shot head: classifier row c = the projected, normalised text embedding of
    class c's prompt x CLIP's logit scale / the typical norm of a projected image feature (measured on a training
    batch), so the classifier starts where CLIP's zero-shot stands, with CLIP's own logit range (fine-tuning a CLIP
    for classification, as real ViTs are; an unnormalised head would start with logits ~15x too large, and their
    first gradients would wreck the tower). mini-clip is built without open_clip's ln_pre (transformers' ViT has no
    pre-norm after the embeddings), so the copy computes exactly what mini-clip's tower computes."""
    import open_clip

    clip = open_clip.create_model("local-dir:" + str(clip_dir)).eval()
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(clip_dir))
    vit = build_vit()
    visual = clip.visual
    if not isinstance(visual.ln_pre, torch.nn.Identity):
        raise ValueError("vit_from_clip needs a mini-clip built with no_ln_pre (transformers' ViT has no ln_pre).")
    source = {k: v.float() for k, v in visual.state_dict().items()}
    width = visual.conv1.out_channels
    target = {
        "vit.embeddings.cls_token": source["class_embedding"].view(1, 1, width),
        "vit.embeddings.position_embeddings": source["positional_embedding"][None],
        "vit.embeddings.patch_embeddings.projection.weight": source["conv1.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": torch.zeros(width),
        "vit.layernorm.weight": source["ln_post.weight"],
        "vit.layernorm.bias": source["ln_post.bias"],
    }
    for i in range(len(visual.transformer.resblocks)):
        block, layer = f"transformer.resblocks.{i}.", f"vit.layers.{i}."
        for name, weight in zip(("q_proj", "k_proj", "v_proj"), source[block + "attn.in_proj_weight"].chunk(3),
                                strict=True):
            target[layer + f"attention.{name}.weight"] = weight
        for name, bias in zip(("q_proj", "k_proj", "v_proj"), source[block + "attn.in_proj_bias"].chunk(3),
                              strict=True):
            target[layer + f"attention.{name}.bias"] = bias
        pairs = {"attention.o_proj": "attn.out_proj", "layernorm_before": "ln_1", "layernorm_after": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
        for mine, theirs in pairs.items():
            target[layer + mine + ".weight"] = source[block + theirs + ".weight"]
            target[layer + mine + ".bias"] = source[block + theirs + ".bias"]
    names = [vit.config.id2label[i] for i in range(vit.config.num_labels)]
    prompts = [bundled_eval.zero_shot_prompt(*name.split(" ")) for name in names]
    text = F.normalize(clip.encode_text(tokenizer(prompts)).float(), dim=-1)
    calibration = scenes.make_scenes(128, shapes.training_seed(0, 0))
    typical_norm = clip.encode_image(to_pixels([e.image for e in calibration])).norm(dim=-1).mean()
    target["classifier.weight"] = clip.logit_scale.exp() / typical_norm * text @ source["proj"].T
    target["classifier.bias"] = torch.zeros(len(names))
    missing = set(vit.state_dict()) - set(target)
    if missing:
        raise RuntimeError(f"No mini-clip weights for {sorted(missing)}")
    vit.load_state_dict(target)
    return vit


def build_cnn():
    """A small transformers ResNetForImageClassification (basic blocks) over the 36 classes."""
    from transformers import ResNetConfig, ResNetForImageClassification

    id2label, label2id = _label_maps()
    config = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 2, 2],
                          layer_type="basic", hidden_act="relu", downsample_in_first_stage=False,
                          num_labels=len(id2label), id2label=id2label, label2id=label2id)
    return ResNetForImageClassification(config)


CNN_INPUT_SIZE = 128  # mini-cnn sees the 64 px images upsampled: its last stage is then an 8x8 map, not 4x4


def input_size(name: str) -> int:
    """The side of the square input each bundled classifier's processor resizes to."""
    return CNN_INPUT_SIZE if name == "mini-cnn" else 64


def image_processor(size: int = 64):
    """The preprocessor saved with the classifiers: resize to size x size (no crop, bicubic), scale, normalise."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=3, do_rescale=True,
                             rescale_factor=1 / 255, do_normalize=True, image_mean=list(shapes.PIXEL_MEAN),
                             image_std=list(shapes.PIXEL_STD))


def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The model's first convolution (a CNN's stem, a ViT's patch embedding)."""
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def stem_roughness(weight: torch.Tensor) -> torch.Tensor:
    """Energy of the differences between neighbouring kernel taps over the kernels' energy: about 3.4 for white
    noise on 7x7 kernels, near 0 for smooth ones. As a training penalty it leaves the first layer smooth filters
    (what a large natural-image training gives) instead of the noise a short run keeps from its initialisation."""
    dx = weight[..., :, 1:] - weight[..., :, :-1]
    dy = weight[..., 1:, :] - weight[..., :-1, :]
    return (dx.pow(2).sum() + dy.pow(2).sum()) / weight.pow(2).sum().clamp_min(1e-12)


def train_classifier(name: str, out_dir: Path, recipe: Recipe, seed: int, device: torch.device,
                     bf16: bool) -> dict:
    """Train and save mini-vit or mini-cnn with save_pretrained (fp16 safetensors) plus its image processor."""
    if name == "mini-vit":
        if not (BUNDLED_DIR / "mini-clip" / "open_clip_config.json").exists():
            raise FileNotFoundError("mini-vit starts from mini-clip's image tower: train mini-clip first.")
        model = vit_from_clip(BUNDLED_DIR / "mini-clip").to(device)
    else:
        model = build_cnn().to(device)

    stem = first_conv(model)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def step_fn(step: int) -> tuple[torch.Tensor, float]:
        examples = training_batch(seed, step, recipe)
        targets = present_class_targets(examples, names).to(device)
        with autocast(device, bf16):
            images = [e.image.resize((input_size(name),) * 2, Image.BICUBIC) for e in examples]
            logits = model(pixel_values=to_pixels(images, device)).logits.float()
        loss = F.cross_entropy(logits, targets, label_smoothing=0.1)
        if recipe.smooth_stem:
            loss = loss + recipe.smooth_stem * stem_roughness(stem.weight)
        hit = targets.gather(1, logits.argmax(dim=1, keepdim=True)) > 0  # the top class is one in the scene
        return loss, float(hit.float().mean())

    log = train_loop(step_fn, model, recipe, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = count_params(model)
    model.to("cpu")
    half = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(out_dir, state_dict=half)  # fp16 on disk, config still says float32: loads as fp32
    image_processor(input_size(name)).save_pretrained(out_dir)
    return {"params": params, **log}


def evaluate_classifier(name: str, out_dir: Path, device: torch.device) -> dict:
    """Reload a classifier and its processor from disk through transformers (fp32) and measure it."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(out_dir, dtype=torch.float32).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(out_dir)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def prep(images) -> torch.Tensor:
        return processor(images=list(images), return_tensors="pt")["pixel_values"]

    def forward_logits(pixels: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=pixels.to(device)).logits

    metrics = {"top1": bundled_eval.classifier_accuracy(forward_logits, prep, names, n=720), "top1_n": 720}
    if name == "mini-cnn":
        torch.manual_seed(0)
        fresh = first_conv(build_cnn()).weight
        metrics["stem_low_frequency_share"] = bundled_eval.low_frequency_share(first_conv(model).weight)
        metrics["stem_low_frequency_share_at_init"] = bundled_eval.low_frequency_share(fresh)
    return metrics


# ---------------------------------------------------------------------------------------------------- model cards

_ABOUT = {
    "mini-clip": (
        "An [open_clip](https://github.com/mlfoundations/open_clip) CLIP: ViT image tower (64 px input, 8 px "
        "patches = 8x8 grid + CLS, 4 layers, width 192, 4 heads of width 48, fixed 2-d sin-cos position "
        "embeddings (open_clip's `pos_embed_type: sin_cos_2d`, as in MAE), no pre-norm (`no_ln_pre`, as in the "
        "original ViT)) and a text transformer (3 layers, "
        "width 128, 4 heads, context 32, vocabulary 49,408, open_clip's own SimpleTokenizer), joint embedding "
        "128-d, learned temperature. Load it offline with "
        "`open_clip.create_model_and_transforms('local-dir:models/bundled/mini-clip')` and "
        "`open_clip.get_tokenizer('local-dir:models/bundled/mini-clip')`.",
        "Symmetric contrastive cross-entropy (image->text and text->image) with a learned logit scale (clamped "
        "at 100); identical captions in a batch are treated as positives of each other's images. Each step "
        "draws fresh scenes of one (60%), two (25%) or three (15%) shapes, each captioned by one of its true "
        "captions (\"a small red star in the top left corner\", \"two green squares\", \"a red star left of a blue "
        "circle\", \"a yellow heart, a blue cross and a red star on a striped background\", ...). For "
        f"{HARD_NEGATIVE_SHARE:.0%} of the "
        "scenes whose first two objects differ in colour and shape, the caption is \"a X and a Y\" and the "
        "colour-swapped \"a X' and a Y'\" joins the batch as a hard negative text (image->text softmax only): it is "
        "what teaches the model which colour goes with which shape. Two more terms, on every image of every step: "
        "prompt supervision (cross-entropy of the image's scaled cosine similarities to the 30 trained class "
        "prompts, and at half weight each to the 6 colour prompts \"a red shape\" and the 6 shape prompts \"a "
        "star\", against an equal share over what the scene holds) and token labelling (training-only linear "
        "read-outs of each patch token's colour and shape, soft cross-entropy against the share of the patch each "
        "object's visible mask covers, background included; Jiang et al. 2021, \"All Tokens Matter\"), which "
        "teaches the small ViT where each object is. The image tower's attention starts from mimetic "
        "initialisation (Trockman & Kolter 2023: each head's query-key product a noisy identity, each layer's "
        "value-output product a noisy negative identity), so with the sin-cos positions it starts local, as a "
        "convolution would. The six held-out compositions "
        f"({', '.join(sorted(scenes.HELD_OUT_COMPOSITIONS))}) never appear in a training scene.",
    ),
    "mini-vit": (
        "A transformers `ViTForImageClassification`: 64 px input, 8 px patches (8x8 grid + CLS), 4 layers, "
        "hidden size 192, 4 heads, MLP 768, 36 classes with `id2label` = the \"{colour} {shape}\" names. "
        "A `ViTImageProcessor` (resize to 64x64, no crop, dataset mean/std) is saved alongside. Load with "
        "`AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32)` and "
        "`AutoImageProcessor.from_pretrained(path)`.",
        "Fine-tuning of mini-clip's image tower (`vit_from_clip`: the same ViT, weights copied; mini-clip has no "
        "ln_pre, which transformers' ViT lacks, so the copy starts exactly at mini-clip) under a zero-shot head "
        "(class c's row = mini-clip's normalised, projected embedding of \"a {colour} {shape}\" x its logit "
        "scale / the mean norm of its projected image features on a training batch, so the head starts with "
        "CLIP's own logits, not ones ~15x too large whose first gradients wreck the tower), as real ViT "
        "classifiers start from pretrained towers. Loss: cross-entropy (label smoothing 0.1) against an equal "
        "share for each class present in fresh scenes of one to three shapes (all 36 classes, the 6 "
        "compositions mini-clip never saw included). Train mini-clip first.",
    ),
    "mini-cnn": (
        "A transformers `ResNetForImageClassification` with basic blocks: stem of 32 channels (7x7 stride-2 "
        "convolution and max pool), stages of [32, 64, 128] channels with 1, 2 and 2 blocks (total "
        "stride 16, theoretical receptive field 195 px), 36 classes with `id2label` = the \"{colour} {shape}\" "
        "names. A "
        "`ViTImageProcessor` (bicubic resize to 128x128, no crop, dataset mean/std) is saved alongside: the 64 px "
        "images are upsampled so that the last stage is an 8x8 map, fine enough for CAMs to localise. Load with "
        "`AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32)` and "
        "`AutoImageProcessor.from_pretrained(path)`.",
        "Cross-entropy (label smoothing 0.1) against an equal share for each class present in fresh scenes of "
        "one to three shapes (all 36 classes), plus a roughness penalty on the 7x7 stem kernels (the energy of "
        "differences between neighbouring taps over the kernels' energy, weight 0.5): a short synthetic training "
        "otherwise leaves the stem the white noise it was initialised with.",
    ),
}


def _attribute_lines(metrics: dict) -> list[str]:
    """The card's line on each attribute named alone, where the log has it (logs from before it was measured don't)."""
    if "held_out_shape_alone_top1" not in metrics:
        return []
    figures = {key: f"{metrics[f'{key}_alone_top1']:.1%}" for key in
               ("trained_colour", "trained_shape", "held_out_colour", "held_out_shape")}
    reading = ""
    if metrics["held_out_shape_alone_top1"] < metrics["trained_shape_alone_top1"] - 0.2:
        reading = ": where a pair is new, the image embedding still names its colour but no longer its shape"
    return [f"- Each attribute named alone (\"a red shape\" over the 6 colours, \"a star\" over the 6 shapes; chance "
            f"16.7%), on the same scenes: colour **{figures['trained_colour']}** and shape "
            f"**{figures['trained_shape']}** on the trained compositions, colour **{figures['held_out_colour']}** and "
            f"shape **{figures['held_out_shape']}** on the held-out ones{reading}"]


def _metric_lines(name: str, metrics: dict) -> list[str]:
    if name == "mini-clip":
        worst = ", ".join(f"{c} {a:.0%}" for c, a in metrics["zero_shot_worst_classes"])
        worst = "every class 100%" if metrics["zero_shot_top1"] == 1.0 else f"weakest classes: {worst}"
        held = ", ".join(f"{c} {a:.0%}" for c, a in sorted(metrics["held_out_compositions_per_class"].items()))
        return [
            f"- Zero-shot top-1 over all 36 class prompts (\"a {{colour}} {{shape}}\", \"an\" before a vowel; cosine "
            f"similarity), {metrics['zero_shot_n']} held-out single-shape scenes of the 30 trained compositions: "
            f"**{metrics['zero_shot_top1']:.1%}** ({worst}); chance 2.8%",
            f"- The same on {metrics['held_out_compositions_n']} scenes of the 6 compositions training never showed: "
            f"**{metrics['held_out_compositions_top1']:.1%}** ({held})",
            *_attribute_lines(metrics),
            f"- Binding: on {metrics['binding_n']} two-shape scenes the true \"a X and a Y\" caption beats the "
            f"colour-swapped one on **{metrics['binding_true_over_swapped']:.1%}** (chance, and any bag-of-words "
            f"model: 50%): {metrics['binding_swap_trained_only']:.1%} of the "
            f"{metrics['binding_swap_trained_only_n']} whose swapped caption names only trained compositions, "
            f"{metrics['binding_swap_names_held_out']:.1%} of the {metrics['binding_swap_names_held_out_n']} whose "
            f"swapped caption names a held-out composition (\"a blue cross\")",
            f"- Text-to-image recall@5 (each held-out scene's caption retrieving its own scene among "
            f"{metrics['recall_n']}): **{metrics['text_to_image_recall@5']:.1%}** "
            f"(recall@1 {metrics['text_to_image_recall@1']:.1%})",
        ]
    lines = [f"- Top-1 accuracy over the 36 classes on {metrics['top1_n']} held-out single-shape scenes: "
             f"**{metrics['top1']:.1%}** (chance 2.8%)"]
    if "stem_low_frequency_share" in metrics:
        lines.append(f"- Stem kernels: **{metrics['stem_low_frequency_share']:.0%}** of their energy at the lowest "
                     f"spatial frequencies (|f| <= 1 cycle per kernel), against "
                     f"{metrics['stem_low_frequency_share_at_init']:.0%} at initialisation")
    return lines


def write_model_card(name: str, out_dir: Path, info: dict) -> None:
    """README.md of a bundled model: what it is, how it was trained, what it measures, what it is for."""
    architecture, objective = _ABOUT[name]
    recipe = info["recipe"]
    size_mb = folder_size(out_dir) / 1e6
    lines = [
        f"# {name}",
        "",
        "A small stand-in for real checkpoints, trained by clipscope itself on its procedural world of coloured-shape "
        "scenes (`models/world/scenes.py`) so that the app, the notebooks and the tests have real weights offline. "
        "It is not a general vision model: it only knows 6 shapes x 6 colours, one to three at a time, on synthetic "
        "and muted photo-crop backgrounds.",
        "",
        "## Architecture",
        "",
        architecture,
        "",
        f"Parameters: {info['params']:,}. Stored as fp16 safetensors ({size_mb:.1f} MB on disk); they load into "
        f"fp32 and the metrics below were measured after that round trip.",
        "",
        "## Training",
        "",
        "- Data: `models.world.scenes` scenes, 64x64 RGB, one to three of 6 shapes (circle, square, triangle, star, "
        "cross, heart) x 6 colours (red, green, blue, yellow, purple, orange), each at a uniformly random position, "
        "size (13 to 30 px) and rotation, overlapping at most by half; plain, noisy, striped, textured, gradient "
        "and photo-crop backgrounds (training crops astronaut, coffee, rocket, hubble_deep_field, grass and brick; "
        "evaluation crops other photographs); fresh scenes every step from training seeds "
        "`shapes.training_seed(seed, step)` (>= 10^9), disjoint from the evaluation seeds (< 10^9).",
        f"- Objective: {objective}",
        f"- Precision: {info['precision']} (fp32 master weights).",
        f"- Optimiser: AdamW (betas 0.9/0.98, weight decay {recipe['weight_decay']} on matrices), peak lr "
        f"{recipe['lr']}, {recipe['warmup']} warm-up steps then cosine decay, gradient clipping at 1.0; "
        f"{recipe['steps']} steps at batch {recipe['batch_size']} ({recipe['steps'] * recipe['batch_size']:,} "
        f"images).",
        f"- Command: `{info['command']}` (seed {info['seed']}).",
        f"- Wall time: {info['wall_time_s'] / 60:.1f} min of training on {info['machine']}"
        f"{'; ' + info['note'] if info.get('note') else ''}.",
        f"- Final training loss {info['history'][-1]['loss']:.3f}, training-batch accuracy "
        f"{info['history'][-1]['train_acc']:.1%}" + (f", logit scale {info['logit_scale']:.1f}."
                                                    if "logit_scale" in info else "."),
        "",
        "## Measured (models/world/bundled_eval.py, held-out seeds)",
        "",
        "Attention, relevancy and CAM pointing against named baselines: `python -m pytest tests/test_truth.py -s` "
        "prints them.",
        "",
        *_metric_lines(name, info["metrics"]),
        "",
        "## Use",
        "",
        "The default model of the clipscope app and notebooks and the real-weights fixture of its tests: small "
        "enough to run instantly on a CPU, trained enough that what clipscope shows (attention, feature maps, "
        "embeddings, predictions) means something. For real images, load a real checkpoint instead.",
        "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


def measure(name: str, out_dir: Path, device: torch.device) -> dict:
    """Reload a saved bundled model from disk (fp32) and measure it."""
    return evaluate_clip(out_dir, device) if name == "mini-clip" else evaluate_classifier(name, out_dir, device)


def remeasure(name: str, out_dir: Path, device: torch.device) -> None:
    """Measure a saved model again (no training) and rewrite its training_log.json metrics and model card."""
    info = json.loads((out_dir / "training_log.json").read_text())
    start = time.perf_counter()
    info["metrics"] = measure(name, out_dir, device)
    info["eval_time_s"] = round(time.perf_counter() - start, 1)
    (out_dir / "training_log.json").write_text(json.dumps(info, indent=1) + "\n")
    write_model_card(name, out_dir, info)
    print(f"[{name}] metrics {json.dumps(info['metrics'])}", flush=True)


def rewrite_card(name: str, out_dir: Path, note: str | None) -> None:
    """Regenerate README.md from the saved training_log.json (no training), optionally with a new note."""
    info = json.loads((out_dir / "training_log.json").read_text())
    if note is not None:
        info["note"] = note
        (out_dir / "training_log.json").write_text(json.dumps(info, indent=1) + "\n")
    write_model_card(name, out_dir, info)


# ---------------------------------------------------------------------------------------------------- entry point

def train(name: str, out_dir: Path, steps: int | None, seed: int, device: torch.device, command: str,
          precision: str = "auto", note: str | None = None) -> dict:
    """Train, save, reload, measure and document one bundled model; returns its summary."""
    recipe = RECIPES[name]
    if steps is not None:
        recipe = Recipe(**{**asdict(recipe), "steps": steps, "warmup": min(recipe.warmup, max(1, steps // 10))})
    bf16 = use_bf16(precision, device)
    print(f"[{name}] training {recipe} on {device} ({'bf16 autocast' if bf16 else 'fp32'}, "
          f"{torch.get_num_threads()} threads) -> {out_dir}", flush=True)
    if name == "mini-clip":
        info = train_clip(out_dir, recipe, seed, device, bf16)
    else:
        info = train_classifier(name, out_dir, recipe, seed, device, bf16)
    metrics_start = time.perf_counter()
    metrics = measure(name, out_dir, device)
    info.update(recipe=asdict(recipe), precision="bf16 autocast" if bf16 else "fp32", seed=seed, command=command,
                machine=machine(device), metrics=metrics, eval_time_s=round(time.perf_counter() - metrics_start, 1),
                note=note)
    write_model_card(name, out_dir, info)
    (out_dir / "training_log.json").write_text(json.dumps(info, indent=1) + "\n")
    for path in out_dir.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the bundled files are meant to be readable by all
    print(f"[{name}] done in {info['wall_time_s']:.0f}s; metrics {json.dumps(metrics)}; "
          f"{folder_size(out_dir) / 1e6:.2f} MB", flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=[*NAMES, "all"])
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the model's recipe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default models/bundled/NAME; with 'all', the parent folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="training precision (auto: bf16 autocast where the hardware is fast at it)")
    parser.add_argument("--note", default=None, help="a remark for the model card's wall-time line")
    parser.add_argument("--card-only", action="store_true",
                        help="only regenerate README.md from the saved training_log.json")
    parser.add_argument("--measure-only", action="store_true",
                        help="only measure the saved model again and rewrite its log's metrics and README.md")
    args = parser.parse_args(argv)

    device = setup(args.seed, args.device, args.threads)
    names = NAMES if args.name == "all" else (args.name,)
    for name in names:
        setup(args.seed, args.device, args.threads)  # each model starts from the same seeded state
        if args.out is None:
            out_dir = BUNDLED_DIR / name
        else:
            out_dir = args.out / name if args.name == "all" else args.out
        if args.card_only:
            rewrite_card(name, out_dir, args.note)
            continue
        if args.measure_only:
            remeasure(name, out_dir, device)
            continue
        command = " ".join(["python -m models.world.train_bundled", name] +
                           (["--steps", str(args.steps)] if args.steps is not None else []) +
                           ["--seed", str(args.seed)] +
                           (["--precision", args.precision] if args.precision != "auto" else []))
        train(name, out_dir, args.steps, args.seed, device, command, args.precision, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
