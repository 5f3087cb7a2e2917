"""What each layer, head and patch writes into CLIP's image embedding, and which texts describe a head (TextSpan).

After Gandelsman, Efros & Steinhardt (ICLR 2024): the image embedding is a sum of direct contributions
(``models.adapters.decompose``), so the image-text score splits into the same terms; mean-ablating the direct
contributions of the early layers (or of every MLP) shows which layers the zero-shot answer rests on; and TextSpan
finds, per head, the few texts whose embedding directions span most of the variance of that head's outputs.

Pure functions on tensors (no figures; those are in ``viz/decomposition_views.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.adapters.decompose import ImageDecomposition, decompose_image
from models.world import scenes, shapes
from models.world.bundled_eval import EVAL_SEED, zero_shot_prompt
from viz.zero_shot import encode_texts


# -- the score of one image and one text, term by term ----------------------------------------------------------------
@dataclass
class ScoreShares:
    """One image's score against one text, split into the decomposition's terms; everything adds up to ``score``."""

    score: float              # logit_scale * cosine(embedding, text), as the model scores it (no SigLIP bias)
    embeddings: float         # the patch + position + class embeddings term
    heads: np.ndarray         # (layers, heads)
    attn_bias: np.ndarray     # (layers,)
    mlps: np.ndarray          # (layers,)
    norm_bias: float          # the final norm's beta (and projection bias)

    def total(self) -> float:
        return float(self.embeddings + self.heads.sum() + self.attn_bias.sum() + self.mlps.sum() + self.norm_bias)

    def layers(self) -> np.ndarray:
        """Each layer's whole share (its heads, attention bias and MLP): (layers,)."""
        return self.heads.sum(axis=1) + self.attn_bias + self.mlps


def score_shares(decomposition: ImageDecomposition, text_embedding: torch.Tensor, logit_scale: float,
                 index: int = 0) -> ScoreShares:
    """Image ``index``'s score against ``text_embedding`` (dim,) term by term: each term's dot product with the unit
    text direction, divided by the embedding's norm, times the logit scale (the terms sum to the score)."""
    text = F.normalize(text_embedding.float().reshape(-1), dim=0)
    factor = logit_scale / float(decomposition.embedding[index].norm())

    def share(term: torch.Tensor) -> np.ndarray:
        return (term[index].float() @ text * factor).cpu().numpy()

    score = float(F.normalize(decomposition.embedding[index].float(), dim=0) @ text) * logit_scale
    return ScoreShares(score=score, embeddings=float(share(decomposition.embeddings)),
                       heads=share(decomposition.heads), attn_bias=share(decomposition.attn_bias),
                       mlps=share(decomposition.mlps), norm_bias=float(share(decomposition.norm_bias)))


def head_token_shares(decomposition: ImageDecomposition, text_embedding: torch.Tensor, logit_scale: float,
                      layer: int, head: int, index: int = 0) -> np.ndarray:
    """Head (layer, head)'s share of the score, per source token (tokens,): sums to that head's entry of
    :func:`score_shares`. Needs a decomposition made with ``tokens=True``."""
    if decomposition.head_tokens is None:
        raise ValueError("Per-token shares need decompose_image(..., tokens=True).")
    if not (0 <= layer < decomposition.num_layers and 0 <= head < decomposition.num_heads):
        raise ValueError(f"No head {layer}.{head}: the tower has {decomposition.num_layers} layers of "
                         f"{decomposition.num_heads} heads.")
    text = F.normalize(text_embedding.float().reshape(-1), dim=0)
    factor = logit_scale / float(decomposition.embedding[index].norm())
    return (decomposition.head_tokens[index, layer, head].float() @ text * factor).cpu().numpy()


# -- a set of images: the bundled world --------------------------------------------------------------------------------
@dataclass
class WorldSet:
    """Held-out single-object scenes of the bundled world, their decomposition and the 36 class prompts."""

    decomposition: ImageDecomposition
    labels: np.ndarray            # (images,) index of each image's class among the prompts
    colours: list[str]
    shapes: list[str]
    prompts: list[str]
    text: torch.Tensor            # (classes, dim) unit text embeddings of the prompts


def world_set(model, n: int = 72, seed: int = EVAL_SEED, batch_size: int = 36) -> WorldSet:
    """Decompose ``n`` held-out balanced scenes (equal counts of the 30 trained compositions) of the bundled world."""
    if n < 2:
        raise ValueError("A mean over the set needs at least two images.")
    examples = scenes.make_scenes(n, seed, balanced=True, split="train")
    classes = shapes.class_names()
    prompts = [zero_shot_prompt(*name.split(" ")) for name in classes]
    parts = [decompose_image(model, model.pixels([e.image for e in examples[i:i + batch_size]]))
             for i in range(0, n, batch_size)]
    fields = ("embeddings", "heads", "attn_bias", "mlps", "norm_bias", "embedding")
    joined = ImageDecomposition(**{f: torch.cat([getattr(p, f).cpu() for p in parts]) for f in fields})
    return WorldSet(joined, np.array([classes.index(e.label) for e in examples]), [e.colour for e in examples],
                    [e.shape for e in examples], prompts, encode_texts(model, prompts))


def accuracy(embeddings: torch.Tensor, text: torch.Tensor, labels: np.ndarray) -> float:
    """Zero-shot top-1 of image embeddings (images, dim) against unit class texts (classes, dim)."""
    predicted = (F.normalize(embeddings.float(), dim=-1) @ text.float().T).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def mean_ablated(decomposition: ImageDecomposition, attention_layers: Sequence[int] = (),
                 mlp_layers: Sequence[int] = ()) -> torch.Tensor:
    """The embeddings (images, dim) with the direct contributions of these layers' attention (heads + bias) and
    MLPs replaced by their mean over the set."""
    total = decomposition.total().clone()
    attention = decomposition.attention()
    for layer in attention_layers:
        total -= attention[:, layer] - attention[:, layer].mean(dim=0)
    for layer in mlp_layers:
        total -= decomposition.mlps[:, layer] - decomposition.mlps[:, layer].mean(dim=0)
    return total


@dataclass
class AblationTable:
    """Zero-shot accuracy of a set under mean-ablations of direct contributions (every row over the same images)."""

    clean: float
    layer_alone: np.ndarray       # (layers,) layer l's attention mean-ablated alone
    up_to: np.ndarray             # (layers + 1,) attention of layers < d mean-ablated, d = 0..layers
    up_to_with_mlps: np.ndarray   # (layers + 1,) the same with every MLP mean-ablated too
    mlps: float                   # every MLP mean-ablated, attention intact
    n: int

    def rows(self) -> list[list]:
        """The table as rows: [depth d, attention < d, attention < d + all MLPs, layer d-1 alone]."""
        return [[d, self.up_to[d], self.up_to_with_mlps[d], self.layer_alone[d - 1] if d else self.clean]
                for d in range(len(self.up_to))]

    def text(self) -> str:
        lines = [f"zero-shot top-1 on {self.n} held-out scenes: clean {self.clean:.3f}; all MLPs mean-ablated "
                 f"{self.mlps:.3f}",
                 "depth d | attention of layers < d mean-ablated | + all MLPs | layer d-1's attention alone"]
        lines += [f"{d:7d} | {a:.3f} | {b:.3f} | {c:.3f}" for d, a, b, c in self.rows()]
        return "\n".join(lines)


def ablation_table(world: WorldSet) -> AblationTable:
    """Accuracy against depth with the early layers' attention, and the MLPs, mean-ablated (the paper's Figure)."""
    dec, layers = world.decomposition, world.decomposition.num_layers
    every_mlp = list(range(layers))

    def acc(attention=(), mlps=()):
        return accuracy(mean_ablated(dec, attention, mlps), world.text, world.labels)

    return AblationTable(
        clean=accuracy(dec.embedding, world.text, world.labels),
        layer_alone=np.array([acc([layer]) for layer in range(layers)]),
        up_to=np.array([acc(range(d)) for d in range(layers + 1)]),
        up_to_with_mlps=np.array([acc(range(d), every_mlp) for d in range(layers + 1)]),
        mlps=acc(mlps=every_mlp), n=len(world.labels))


def label_variance_share(outputs: torch.Tensor, labels: Sequence) -> float:
    """Share of the variance of ``outputs`` (images, dim) explained by the group means of ``labels`` (between-group
    variance / total variance, in [0, 1]): high for a head whose output is set by, say, the object's colour."""
    x = outputs.double() - outputs.double().mean(dim=0)
    total = float((x ** 2).sum())
    if total == 0:
        return 0.0
    labels = np.asarray(labels)
    between = sum(len(idx) * float(x[idx].mean(dim=0).pow(2).sum())
                  for idx in (np.flatnonzero(labels == value) for value in np.unique(labels)))
    return between / total


# -- TextSpan --------------------------------------------------------------------------------------------------------
@dataclass
class TextSpan:
    """The texts chosen for one head, in order, with the share of the head's variance their span explains."""

    texts: list[str]
    indices: list[int]
    explained: np.ndarray         # (steps,) cumulative share of the variance of the head's outputs

    def rows(self) -> list[list]:
        gains = np.diff(np.concatenate([[0.0], self.explained]))
        return [[i + 1, text, float(gain), float(total)]
                for i, (text, gain, total) in enumerate(zip(self.texts, gains, self.explained, strict=True))]


def text_span(outputs: torch.Tensor, text_embeddings: torch.Tensor, texts: Sequence[str], steps: int = 5,
              rank: int | None = None) -> TextSpan:
    """Greedy TextSpan of one head: ``outputs`` (images, dim) are the head's direct contributions (summed over
    tokens), ``text_embeddings`` (texts, dim) the candidates' embeddings.

    Each step picks the text whose direction carries the most variance of the (centred) outputs, then projects that
    direction out of the outputs and out of every remaining candidate, so the next pick explains what is left. With
    ``rank``, candidates are first projected onto the outputs' top-``rank`` principal directions (the paper's
    choice: texts are judged by the part of them the head can write)."""
    if len(texts) != len(text_embeddings):
        raise ValueError(f"{len(texts)} texts but {len(text_embeddings)} text embeddings.")
    steps = min(int(steps), len(texts))
    if steps < 1:
        raise ValueError("TextSpan needs at least one step and one text.")
    data = outputs.double() - outputs.double().mean(dim=0)
    candidates = text_embeddings.double().clone()
    if rank is not None:
        _, _, vh = torch.linalg.svd(data, full_matrices=False)
        basis = vh[:rank]
        candidates = candidates @ basis.T @ basis
    total = float((data ** 2).sum())
    explained, chosen, removed = [], [], 0.0
    for _ in range(steps):
        variance = (data @ candidates.T).var(dim=0)
        if chosen:
            variance[chosen] = -1.0
        best = int(variance.argmax())
        direction = candidates[best] / candidates[best].norm().clamp_min(1e-12)
        along = data @ direction
        removed += float((along ** 2).sum())
        data = data - along[:, None] * direction
        candidates = candidates - (candidates @ direction)[:, None] * direction
        chosen.append(best)
        explained.append(removed / total if total > 0 else 0.0)
    return TextSpan([texts[i] for i in chosen], chosen, np.array(explained))


def world_vocabulary(n_captions: int = 0, seed: int = EVAL_SEED + 1) -> list[str]:
    """The default TextSpan vocabulary, in the bundled world's own words: the 36 class prompts, each colour and
    shape alone, sizes, places and backgrounds, plus (``n_captions`` > 0) the distinct captions of that many
    held-out scenes."""
    prompts = [zero_shot_prompt(*name.split(" ")) for name in shapes.class_names()]
    words = [f"something {colour}" for colour in shapes.COLOURS] + [f"a {shape}" for shape in shapes.SHAPES]
    sizes = [f"a {size} shape" for size in ("small", "medium", "large")]
    places = [f"a shape {where}" for where in ("on the left", "on the right", "near the top", "near the bottom",
                                               "in the centre", "in the top left corner", "in the bottom right corner")]
    backgrounds = [f"a shape on a {kind} background" for kind in ("plain", "noisy", "striped", "textured",
                                                                  "gradient", "photo")]
    captions = [example.caption for example in scenes.make_scenes(n_captions, seed)] if n_captions else []
    return list(dict.fromkeys(prompts + words + sizes + places + backgrounds + captions))


def head_importance(world: WorldSet) -> np.ndarray:
    """Each head's effect on zero-shot accuracy when mean-ablated alone (clean - ablated; (layers, heads)): the
    heads the answer rests on."""
    dec = world.decomposition
    clean = accuracy(dec.embedding, world.text, world.labels)
    drops = np.zeros((dec.num_layers, dec.num_heads))
    for layer in range(dec.num_layers):
        for head in range(dec.num_heads):
            term = dec.heads[:, layer, head]
            drops[layer, head] = clean - accuracy(dec.total() - (term - term.mean(dim=0)), world.text, world.labels)
    return drops
