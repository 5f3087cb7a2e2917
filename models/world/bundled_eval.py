"""Quality measurements of the bundled models on held-out procedural shapes (used by the tests and model cards).

Every function takes plain callables, so it works on a raw model, an adapter or a real checkpoint alike:
``encode_image(pixels[B, 3, H, W]) -> [B, E]``, ``encode_text(list[str]) -> [B, E]``,
``preprocess(list[PIL.Image]) -> [B, 3, H, W]``, ``forward_logits(pixels) -> [B, classes]`` and
``cls_attention_fn(pixels) -> [B, grid_h, grid_w]``. Embeddings are compared by cosine similarity.

Held-out data: scenes of :mod:`models.world.scenes` (random positions, sizes, rotations, backgrounds) from seeds below
``shapes.TRAIN_SEED_START`` (10**9), with photo backgrounds cropped from photographs training never saw; training only
ever uses ``shapes.training_seed(...) >= 10**9``. ``split="held_out"`` draws only the colour x shape compositions
mini-clip never saw in training (:data:`scenes.HELD_OUT_COMPOSITIONS`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.world import scenes, shapes

EVAL_SEED = 20_240_601  # default held-out dataset seed (any seed below shapes.TRAIN_SEED_START is held out)

EncodeImage = Callable[[torch.Tensor], torch.Tensor]
EncodeText = Callable[[list[str]], torch.Tensor]
Preprocess = Callable[[Sequence[Image.Image]], torch.Tensor]


def _check_seed(seed: int) -> None:
    if not 0 <= seed < shapes.TRAIN_SEED_START:
        raise ValueError(f"Evaluation seeds must be in [0, {shapes.TRAIN_SEED_START}); training uses the rest.")


def zero_shot_prompt(colour: str, shape: str) -> str:
    """The zero-shot prompt of a class: "a {colour} {shape}" (with "an" before a vowel, as in the captions)."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


@torch.no_grad()
def _image_embeddings(encode_image: EncodeImage, preprocess: Preprocess, images: list[Image.Image],
                      batch_size: int) -> torch.Tensor:
    chunks = [encode_image(preprocess(images[i:i + batch_size])).float().cpu()
              for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


@torch.no_grad()
def _text_embeddings(encode_text: EncodeText, texts: list[str], batch_size: int) -> torch.Tensor:
    chunks = [encode_text(texts[i:i + batch_size]).float().cpu() for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(chunks), dim=-1)


ATTRIBUTE_PROMPTS = {"colour": "a {} shape", "shape": "a {}"}  # one attribute named alone ("a red shape", "a star")
ATTRIBUTE_VALUES = {"colour": list(shapes.COLOURS), "shape": list(shapes.SHAPES)}


def _nearest_prompt(image: torch.Tensor, encode_text: EncodeText, prompts: list[str], batch_size: int) -> list[int]:
    """Each (normalised) image embedding's most similar prompt, by index."""
    return (image @ _text_embeddings(encode_text, prompts, batch_size).T).argmax(dim=1).tolist()


def clip_zero_shot_accuracy(encode_image: EncodeImage, encode_text: EncodeText, preprocess: Preprocess,
                            n: int = 360, seed: int = EVAL_SEED, batch_size: int = 64, split: str = "train",
                            attributes: Sequence[str] = ()) -> dict:
    """Zero-shot top-1 over all 36 class prompts on ``n`` held-out single-object scenes whose classes are those of
    ``split`` ("train": the 30 compositions seen in training; "held_out": the 6 never seen), equal counts per class.
    Each of ``attributes`` ("colour", "shape") is also read alone from the same image embeddings: "a red shape" over
    the 6 colours, "a star" over the 6 shapes (chance 1/6); on the held-out compositions that says which attribute
    the image tower loses on a pair it never saw.

    Returns {"top1", "per_class" (name -> accuracy), "n", "prompts", "alone" (attribute -> accuracy)}.
    """
    _check_seed(seed)
    unknown = [a for a in attributes if a not in ATTRIBUTE_PROMPTS]
    if unknown:
        raise ValueError(f"attributes must be 'colour' or 'shape', not {unknown}")
    classes = shapes.class_names()
    prompts = [zero_shot_prompt(*name.split(" ")) for name in classes]
    examples = scenes.make_scenes(n, seed, balanced=True, split=split)
    image = _image_embeddings(encode_image, preprocess, [e.image for e in examples], batch_size)
    predicted = _nearest_prompt(image, encode_text, prompts, batch_size)
    truth = [classes.index(e.label) for e in examples]
    hits = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
    per_class = {name: float(hits[[t == k for t in truth]].mean()) for k, name in enumerate(classes)
                 if k in truth}
    alone = {}
    for attribute in attributes:
        values = ATTRIBUTE_VALUES[attribute]
        texts = [shapes._articles(ATTRIBUTE_PROMPTS[attribute].format(v)) for v in values]
        named = _nearest_prompt(image, encode_text, texts, batch_size)
        alone[attribute] = float(np.mean([values[p] == getattr(e, attribute)
                                          for p, e in zip(named, examples, strict=True)]))
    return {"top1": float(hits.mean()), "per_class": per_class, "n": n, "prompts": prompts, "alone": alone}


def clip_text_to_image_recall(encode_image: EncodeImage, encode_text: EncodeText, preprocess: Preprocess,
                              n: int = 200, seed: int = EVAL_SEED + 1, k: int = 5, batch_size: int = 64) -> float:
    """Recall@k of each held-out scene's caption retrieving its own scene among the ``n`` (ties count against)."""
    _check_seed(seed)
    examples = scenes.make_scenes(n, seed, split="any")
    text = _text_embeddings(encode_text, [e.caption for e in examples], batch_size)
    image = _image_embeddings(encode_image, preprocess, [e.image for e in examples], batch_size)
    similarity = text @ image.T
    own = similarity.diagonal().unsqueeze(1)
    others_at_least = (similarity >= own).sum(dim=1) - 1  # images scoring at least as high as the right one
    return float((others_at_least < k).float().mean())


@torch.no_grad()
def classifier_accuracy(forward_logits: Callable[[torch.Tensor], torch.Tensor], preprocess: Preprocess,
                        class_names: Sequence[str], n: int = 360, seed: int = EVAL_SEED + 2,
                        batch_size: int = 64) -> float:
    """Top-1 accuracy of a classifier on ``n`` held-out single-object scenes (equal counts per class, all 36).

    ``class_names[i]`` is the "{colour} {shape}" name of logit ``i``.
    """
    _check_seed(seed)
    examples = scenes.make_scenes(n, seed, balanced=True, split="any")
    correct = 0
    for i in range(0, n, batch_size):
        batch = examples[i:i + batch_size]
        logits = forward_logits(preprocess([e.image for e in batch]))
        predicted = logits.argmax(dim=-1).tolist()
        correct += sum(class_names[p] == e.label for p, e in zip(predicted, batch, strict=True))
    return correct / n


def names_held_out_composition(text: str) -> bool:
    """Whether a caption names one of the compositions no training scene holds ("a blue cross")."""
    return any(composition in text for composition in scenes.HELD_OUT_COMPOSITIONS)


@torch.no_grad()
def clip_binding_results(encode_image: EncodeImage, encode_text: EncodeText, preprocess: Preprocess,
                         n: int = 200, seed: int = EVAL_SEED + 4, split: str = "train",
                         batch_size: int = 64) -> dict:
    """Binding on held-out two-object scenes (objects differing in colour and shape): the share whose image is
    closer to the true "a X and a Y" caption than to the colour-swapped one ("a red star and a blue circle" vs
    "a blue star and a red circle"), overall ("all", of "n") and split by whether the swapped caption names a
    held-out composition ("swap_names_held_out") or only trained ones ("swap_trained_only"), each with its size
    ("..._n"): a model trained with such swaps as negatives can score the first group from memory. Chance is
    50%; a bag-of-words model scores 50% too (both captions hold the same words)."""
    _check_seed(seed)
    examples = [scenes.make_scene([seed, i], n_objects=2, distinct=True, split=split) for i in range(n)]
    swapped_texts = [scenes.colour_swapped_caption(e.objects) for e in examples]
    image = _image_embeddings(encode_image, preprocess, [e.image for e in examples], batch_size)
    true = _text_embeddings(encode_text, [scenes.pair_caption(e.objects) for e in examples], batch_size)
    swapped = _text_embeddings(encode_text, swapped_texts, batch_size)
    wins = ((image * true).sum(dim=1) > (image * swapped).sum(dim=1)).float()
    names_held_out = torch.tensor([names_held_out_composition(text) for text in swapped_texts])
    results = {"all": float(wins.mean()), "n": n}
    for key, group in (("swap_names_held_out", names_held_out), ("swap_trained_only", ~names_held_out)):
        results[key] = float(wins[group].mean()) if group.any() else float("nan")
        results[f"{key}_n"] = int(group.sum())
    return results


def clip_binding_accuracy(encode_image: EncodeImage, encode_text: EncodeText, preprocess: Preprocess,
                          n: int = 200, seed: int = EVAL_SEED + 4, split: str = "train", batch_size: int = 64) -> float:
    """The overall binding rate of :func:`clip_binding_results` (true over colour-swapped caption)."""
    return clip_binding_results(encode_image, encode_text, preprocess, n, seed, split, batch_size)["all"]


def mask_on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each patch covered by the mask (area average onto a (grid_h, grid_w) grid)."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.adaptive_avg_pool2d(tensor, grid)[0, 0].numpy()


def mass_on_mask(heat: np.ndarray | torch.Tensor, mask: np.ndarray) -> tuple[float, float]:
    """(share of a (grid_h, grid_w) map's mass inside the object mask, the mask's share of the image), both on the
    map's grid with the mask downsampled by area. A map that favours the object has the first above the second."""
    heat = heat.detach().float().cpu().numpy() if torch.is_tensor(heat) else np.asarray(heat)
    cover = mask_on_grid(mask, heat.shape)
    return float((heat * cover).sum() / heat.sum()), float(cover.mean())


def low_frequency_share(weight: torch.Tensor, cutoff: int = 1) -> float:
    """Share of convolution kernels' spectral energy at the lowest spatial frequencies (both |frequency| <=
    ``cutoff`` cycles per kernel, DC included), pooled over all kernels: 9/49 = 18% for white-noise 7x7 kernels,
    near 1 for smooth blobs and ramps. The first layer of a well-trained vision CNN sits far above noise."""
    spectrum = torch.fft.fft2(weight.detach().float()).abs().pow(2)
    height, width = spectrum.shape[-2:]
    fy = torch.fft.fftfreq(height, d=1 / height).abs()
    fx = torch.fft.fftfreq(width, d=1 / width).abs()
    low = (fy[:, None] <= cutoff) & (fx[None, :] <= cutoff)
    return float(spectrum[..., low].sum() / spectrum.sum())
