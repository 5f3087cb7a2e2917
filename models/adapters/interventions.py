"""Interventions by canonical name: ablation and activation patching, the same shape as capture.

    with model.ablate(["blocks.3.attn.head.1", "blocks.5.mlp_out"], mode="zero"):
        ablated = model.run_image(pixels)                 # every forward inside runs ablated

    with model.ablate(["blocks.*.mlp_out"], mode="mean", reference=images):   # mean over the reference images
        ablated = model.run_image(pixels)

    with model.capture(["blocks.4.resid_post"]) as source:
        model.run_image(pixels_b)
    with model.patch({"blocks.4.resid_post": source}, tokens=[0]):   # image B's CLS token put into A's forward
        patched = model.run_image(pixels_a)

Names are the model's canonical hook points (``model.hook_names()``, minus the attention values, which are
recomputed, not run through), plus ``blocks.N.attn.head.H`` (head H removed at the attention output, before the
output projection: its slice of concat_h(A_h V_h)) and ``stages.S.channel.C`` / ``stem.channel.C`` (one channel of a
CNN stage map); ``model.intervention_names()`` lists them (channels are not enumerated). Globs work as in capture.

"zero" replaces the named tensor (or its part) with zeros; "mean" with its mean over a reference set, per token
position (computed under a capture when the context is entered). Hooks go on when the context is entered and all
come off on exit, also when the body raises; the context holds the model's lock from entry to exit, so no other
thread's forward runs through them. The edits run before any other hook on the same module, so a capture (entered
before or inside the context) reads the edited tensors. Nothing else of the model is touched: outside the context
every output is bit-identical to a model that was never ablated.

Batched sweeps: ``rows={name: bool mask over the batch}`` ablates a name in those batch rows only, so one forward
over copies of an image can ablate a different head in each copy (``viz.interventions.head_importance``).

Where a kind of attention never calls its output projection as a module (``nn.MultiheadAttention`` hands the
weight to ``F.multi_head_attention_forward``), a head is removed by subtracting its contribution,
(mixed_h - replacement_h) W_o,h^T, from the module's output, with mixed_h recomputed from the recorded input as the
pattern views recompute it (equal to the model's own to float tolerance).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.adapters.attention import AttentionSite
from models.adapters.attention_hf import HFEncoderAttentionSite
from models.adapters.attention_window import TorchvisionWindowAttentionSite
from models.adapters.capture import ATTENTION_VALUES, ActivationCache, Capture, HookPoint, expand_names
from models.errors import CaptureError, ClipscopeModelError

if TYPE_CHECKING:
    from models.adapters.base import ModelAdapter

MODES = ("zero", "mean")
HEAD_NAME = re.compile(r"^(?P<site>.+\.attn)\.head\.(?P<head>\d+)$")
CHANNEL_NAME = re.compile(r"^(?P<point>stem|stages\.\d+)\.channel\.(?P<channel>\d+)$")
REFERENCE_BATCH = 16


class InterventionError(ClipscopeModelError, ValueError):
    """An ablation or patch that cannot be done as asked: a bad mode, a missing reference, a shape that does not
    fit, a head of an attention kind whose heads clipscope cannot separate."""


# -- names ----------------------------------------------------------------------------------------------------------
def intervention_names(model: ModelAdapter) -> list[str]:
    """Every name ``ablate`` takes, in forward order: the hook points that run through a module (not the static
    ``pos_embed`` nor the recomputed attention values) and ``<site>.head.H`` for every head of every attention site
    (CNN channels, ``stages.S.channel.C``, are accepted but not listed)."""
    names = [name for name, point in model.points.items() if point.kind != "static"]
    for site_name, site in model.sites.items():
        names.extend(f"{site_name}.head.{h}" for h in range(site.num_heads))
    return names


def _expand(model: ModelAdapter, patterns: Iterable[str] | str) -> list[str]:
    """Concrete names for ``patterns`` (globs allowed); channel names pass through; unknown names raise
    CaptureError naming the close ones."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise InterventionError("Name at least one thing to intervene on (see model.intervention_names()).")
    module_names = {name for name, _ in model.module.named_modules() if name}
    chosen: list[str] = []
    for pattern in patterns:
        channel = CHANNEL_NAME.match(pattern)
        if channel and channel["point"] in model.points:
            found = [pattern]
        else:
            site_name, _, value = pattern.rpartition(".")
            if site_name in model.sites and value in ATTENTION_VALUES:
                raise CaptureError(f"{pattern!r} is recomputed from the attention input, not run through; ablate "
                                   f"{site_name}.head.H or the attention output ({site_name}_out) instead.")
            found = expand_names([pattern], intervention_names(model), module_names)
        chosen.extend(name for name in found if name not in chosen)
    return chosen


def _point(model: ModelAdapter, name: str) -> HookPoint:
    if name.startswith("module."):
        return HookPoint(model.module.get_submodule(name[len("module."):]))
    return model.points[name]


# -- where a head's values are ----------------------------------------------------------------------------------------
def heads_module(site: AttentionSite) -> tuple[nn.Module, str] | None:
    """(module, "input" | "output") holding concat_h(A_h V_h), the heads' mixed values before the output projection;
    None where the kind never calls such a module (nn.MultiheadAttention, torchvision's shifted windows)."""
    mixed = site.mixed_heads_module()   # timm's inner norm: its input is the heads' values
    if mixed is not None:
        return mixed, "input"
    if isinstance(site, HFEncoderAttentionSite):   # BERT-style self-attention returns the concatenated heads
        return site.module, "output"
    inner = getattr(site.module, "ln_inner", None)   # open_clip Attention: heads * head_scale -> ln_inner -> out_proj
    if isinstance(inner, nn.Module):
        return inner, "input"
    output = site.output_module()
    if isinstance(output, nn.MultiheadAttention) or isinstance(site, TorchvisionWindowAttentionSite):
        return None
    if isinstance(output, nn.Identity):   # timm pool head without projection: its input is the heads' values
        return output, "input"
    weight = site.output_projection()[0]
    return next(((m, "input") for m in output.modules() if getattr(m, "weight", None) is weight), None)


def head_ablation_supported(site: AttentionSite) -> bool:
    """Can single heads of this site be ablated? (All kinds but torchvision's shifted windows, whose heads live
    inside one function call.)"""
    return not isinstance(site, TorchvisionWindowAttentionSite)


def _head_slice(site: AttentionSite, head: int) -> slice:
    return slice(head * site.head_dim, (head + 1) * site.head_dim)


def _mixed_heads(site: AttentionSite, x: torch.Tensor, context: dict) -> torch.Tensor:
    """(batch, heads, queries, head_dim) = A_h V_h recomputed from the attention input, in float32."""
    q, k, v = site.qkv(x, with_v=True, context=context)
    pattern = site.pattern(q, k, context)
    return pattern[..., -v.shape[-2]:] @ v.float()   # pool heads pad the prefix columns they are not given


# -- editing tensors --------------------------------------------------------------------------------------------------
def _put_output(output, new: torch.Tensor):
    """``output`` with the tensor HookPoint.pick reads from it replaced by ``new``."""
    if torch.is_tensor(output):
        return new
    if isinstance(output, (tuple, list)):
        return type(output)((_put_output(output[0], new), *output[1:]))
    if hasattr(output, "logits"):
        output["logits"] = new
        return output
    raise InterventionError(f"Cannot replace a module output of type {type(output).__name__}.")


def _put_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    key = next(k for k, v in kwargs.items() if torch.is_tensor(v))
    return args, {**kwargs, key: new}


def _to_raw(raw: torch.Tensor, canonical: torch.Tensor, transform: Callable | None) -> torch.Tensor:
    """The raw-layout tensor whose canonical form is ``canonical``: the transform (a reshape / permute of the
    layout) is inverted by sending the raw positions through it."""
    if transform is None or transform(raw) is raw:   # no transform, or one that leaves this layout as it is
        return canonical
    positions = transform(torch.arange(1, raw.numel() + 1, device=raw.device).reshape(raw.shape))
    flat_positions, flat_values = positions.reshape(-1), canonical.reshape(-1)
    real = flat_positions > 0   # padding a transform adds (window partitions) maps nowhere
    out = raw.reshape(-1).clone()
    out[flat_positions[real] - 1] = flat_values[real].to(out.dtype)
    return out.reshape(raw.shape)


def _broadcast_rows(value: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """(1 | k | n, ...) repeated to n rows (k = window groups of one image, kept together)."""
    if value.shape[0] == n:
        return value
    if n % value.shape[0]:
        raise InterventionError(f"{name}: {value.shape[0]} replacement rows do not fit {n} rows.")
    return value.repeat(n // value.shape[0], *([1] * (value.ndim - 1)))


@dataclass
class Edit:
    """One change of one tensor: which part (``index`` after the leading rows axis), with what (None = zeros; else
    broadcast over the rows: (1 | rows | groups, ...)), in which batch rows (None = all)."""

    name: str
    index: tuple = (Ellipsis,)
    value: torch.Tensor | None = None
    rows: torch.Tensor | None = None   # bool (batch,)

    def apply(self, x: torch.Tensor) -> None:
        """Edit ``x`` (rows, ...) in place; ``rows`` may be batch * k (window groups), k kept together."""
        n = x.shape[0]
        select = slice(None)
        if self.rows is not None:
            batch = self.rows.numel()
            if n % batch:
                raise InterventionError(f"{self.name}: {n} rows in the forward, but the row mask covers {batch}.")
            select = self.rows.to(x.device).repeat_interleave(n // batch)
        where = (select, *self.index)
        if isinstance(self.index[0], int) and not 0 <= self.index[0] < x.shape[1]:
            raise InterventionError(f"{self.name}: this map has {x.shape[1]} channels (0..{x.shape[1] - 1}).")
        if self.value is None:
            x[where] = 0
            return
        value = self.value.to(x.device, x.dtype)
        if value.shape[1:] != x.shape[1:]:
            raise InterventionError(f"{self.name}: the replacement is {tuple(value.shape[1:])} per row but the forward "
                                    f"has {tuple(x.shape[1:])} (a different input size or token count?).")
        x[where] = _broadcast_rows(value, n, self.name)[where]


def _mean_rows(t: torch.Tensor, references: int) -> torch.Tensor:
    """Mean over the reference images of (references * k, ...) -> (k, ...): windows of one image stay apart."""
    t = t.float()
    return t.reshape(references, -1, *t.shape[1:]).mean(dim=0)


# -- the contexts -----------------------------------------------------------------------------------------------------
class Intervention:
    """Shared part of ablation and patching: the lock, hook registration on entry and removal on exit."""

    def __init__(self, model: ModelAdapter):
        self.model = model
        self._handles: list = []
        self._point_edits: dict[tuple[int, str], tuple[HookPoint, list[Edit]]] = {}
        self._delta_edits: dict[str, list[tuple[int, torch.Tensor | None, torch.Tensor | None]]] = {}

    def _prepare(self) -> None:
        """Work out every edit (means are computed here, under the lock)."""
        raise NotImplementedError

    def __enter__(self) -> Intervention:
        self.model.lock.acquire()
        try:
            self._prepare()
            self._register()
        except BaseException:
            self._remove()
            self.model.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._remove()
        finally:
            self.model.lock.release()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- collecting edits --
    def _add(self, point: HookPoint, edit: Edit) -> None:
        key = (id(point.module), point.kind)
        self._point_edits.setdefault(key, (point, []))[1].append(edit)

    # -- hooks --
    def _register(self) -> None:
        for point, edits in self._point_edits.values():
            self._hook_point(point, edits)
        for site_name, edits in self._delta_edits.items():
            self._hook_delta(site_name, edits)

    def _hook_point(self, point: HookPoint, edits: list[Edit]) -> None:
        """Edit the point's tensor; the hook goes first (prepend), so a capture entered earlier reads the edit too."""
        def edited(raw: torch.Tensor) -> torch.Tensor:
            canonical = point.canonical(raw).clone()
            for edit in edits:
                edit.apply(canonical)
            return _to_raw(raw, canonical, point.transform)

        if point.kind == "input":
            def pre_hook(module, args, kwargs):
                return _put_input(args, kwargs, edited(point.pick(args, kwargs)))
            self._handles.append(point.module.register_forward_pre_hook(pre_hook, with_kwargs=True, prepend=True))
        else:
            def hook(module, args, output):
                return _put_output(output, edited(point.pick(args, {}, output)))
            self._handles.append(point.module.register_forward_hook(hook, prepend=True))

    def _hook_delta(self, site_name: str, edits: list) -> None:
        """Heads of a kind without a called output projection: subtract (mixed_h - replacement_h) W_o,h^T."""
        site = self.model.sites[site_name]
        recorded: dict = {}

        def pre_hook(module, args, kwargs):
            recorded["x"], recorded["context"] = site.input_of(args, kwargs), site.context_of(args, kwargs)

        def hook(module, args, output):
            raw = site.output_of(output)
            out = site.grad_output_batch_first(raw)
            mixed = _mixed_heads(site, recorded.pop("x"), recorded.pop("context"))
            weight = site.output_projection()[0].float()
            delta = torch.zeros(out.shape, dtype=torch.float32, device=out.device)
            for head, value, rows in edits:
                difference = mixed[:, head].clone()
                if value is not None:
                    difference -= _broadcast_rows(value, difference.shape[0], site_name).to(difference.device)
                if rows is not None:
                    keep = ~rows.to(difference.device).repeat_interleave(difference.shape[0] // rows.numel())
                    difference[keep] = 0
                delta += difference @ weight[:, _head_slice(site, head)].T
            return _put_output(output, _to_raw(raw, out - delta.to(out.dtype), site.grad_output_batch_first))

        self._handles.append(site.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        self._handles.append(site.output_module().register_forward_hook(hook, prepend=True))

    def _guard_heads(self, site_names: set[str]) -> None:
        """Make a forward fail loudly if a site runs without passing through the module its head edits sit on."""
        for site_name in site_names:
            site = self.model.sites[site_name]
            found = heads_module(site)
            if found is None or found[0] is site.module:
                continue
            seen = {"calls": 0}

            def count(module, args, seen=seen):
                seen["calls"] += 1

            def start(module, args, seen=seen):
                seen["calls"] = 0

            def check(module, args, output, seen=seen, site_name=site_name):
                if seen["calls"] == 0:
                    raise InterventionError(f"{site_name} ran without calling the module that holds its heads' "
                                            "values: the head ablation could not act.")
            self._handles.append(found[0].register_forward_pre_hook(count))
            self._handles.append(site.module.register_forward_pre_hook(start))
            self._handles.append(site.module.register_forward_hook(check))


@dataclass
class Step:
    """How one name is ablated: an edit at ``point`` (``index`` = its part), or a delta where ``point`` is None;
    ``key`` = what the reference capture reads for its mean; ``site`` / ``head`` for head names."""

    name: str
    point: HookPoint | None
    index: tuple
    key: str
    site: str | None = None
    head: int | None = None


class Ablation(Intervention):
    """``with model.ablate(names, mode, reference):`` every forward inside runs with the named parts zeroed or
    replaced by their mean over the reference images. ``rows`` (name -> bool mask over the batch) ablates a name in
    some batch rows only, so that one forward over copies of an image ablates a different head in each copy."""

    def __init__(self, model: ModelAdapter, names: Iterable[str] | str, mode: str = "zero",
                 reference=None, rows: Mapping[str, Sequence[bool] | torch.Tensor] | None = None):
        super().__init__(model)
        if mode not in MODES:
            raise InterventionError(f"Ablation mode {mode!r}: use one of {', '.join(MODES)}.")
        if mode == "mean" and reference is None:
            raise InterventionError('Mean ablation needs reference images (reference=...) to take the mean over.')
        self.mode = mode
        self.reference = reference
        self.names = _expand(model, names)
        self.rows = self._row_masks(rows or {})
        self.means: dict[str, torch.Tensor] = {}

    def _row_masks(self, rows: Mapping) -> dict[str, torch.Tensor]:
        masks = {}
        for pattern, mask in rows.items():
            mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
            for name in _expand(self.model, pattern):
                if name not in self.names:
                    raise InterventionError(f"rows names {name!r}, which is not among the ablated names.")
                masks[name] = mask
        return masks

    # -- planning --
    def _plan(self) -> list[Step]:
        """How each name is ablated: an edit of a hooked tensor, or (heads without a called projection) a delta."""
        plan = []
        for name in self.names:
            head = HEAD_NAME.match(name)
            channel = CHANNEL_NAME.match(name)
            if head and head["site"] in self.model.sites:
                site_name, index = head["site"], int(head["head"])
                site = self.model.sites[site_name]
                found = heads_module(site)
                if not head_ablation_supported(site):
                    raise InterventionError(f"{name!r}: {site.kind} computes its heads inside one function call, "
                                            "so single heads cannot be removed; ablate the whole stage instead.")
                if found is None:
                    plan.append(Step(name, None, (), f"{site_name}.mixed", site_name, index))
                else:
                    plan.append(Step(name, HookPoint(found[0], kind=found[1]), (Ellipsis, _head_slice(site, index)),
                                     f"{site_name}.heads_in", site_name, index))
            elif channel:
                plan.append(Step(name, self.model.points[channel["point"]], (int(channel["channel"]), Ellipsis),
                                 channel["point"]))
            else:
                plan.append(Step(name, _point(self.model, name), (Ellipsis,), name))
        return plan

    def _prepare(self) -> None:
        plan = self._plan()
        if self.mode == "mean":
            self._compute_means(plan)
        for step in plan:
            value, rows = self.means.get(step.name), self.rows.get(step.name)
            if step.point is None:
                self._delta_edits.setdefault(step.site, []).append((step.head, value, rows))
            else:
                self._add(step.point, Edit(step.name, step.index, value, rows))
        self._guard_heads({step.site for step in plan if step.point is not None and step.site})

    def _reference_pixels(self) -> torch.Tensor:
        pixels = self.model.pixels(self.reference if torch.is_tensor(self.reference) else list(self.reference))
        if pixels.shape[0] == 0:
            raise InterventionError("The reference set for mean ablation is empty.")
        return pixels

    def _compute_means(self, plan: list[Step]) -> None:
        """Mean over the reference images of every planned tensor, per token position (the edit takes its part),
        read by one capture per chunk of reference images."""
        if any(step.name.startswith("text.") for step in plan):
            raise InterventionError("Mean ablation takes reference images: text-tower names can be ablated with "
                                    'mode="zero" only.')
        points: dict[str, HookPoint] = dict(self.model.points)
        for step in plan:
            if step.point is not None:
                points.setdefault(step.key, step.point)
        keys = sorted({step.key for step in plan})
        names = [key for key in keys if not key.endswith(".mixed")]
        names += [f"{key[:-len('.mixed')]}.{value}" for key in keys if key.endswith(".mixed")
                  for value in ("pattern", "v")]
        pixels = self._reference_pixels()
        sums: dict[str, torch.Tensor] = {}
        for start in range(0, pixels.shape[0], REFERENCE_BATCH):
            chunk = pixels[start:start + REFERENCE_BATCH]
            with Capture(names, points, self.model.sites, lock=self.model.lock) as cache:
                self.model.run_image(chunk)
            for key in keys:
                tensor = self._mixed(cache, key[:-len(".mixed")]) if key.endswith(".mixed") else cache[key]
                part = _mean_rows(tensor, chunk.shape[0]) * chunk.shape[0]
                sums[key] = part if key not in sums else sums[key] + part
        for step in plan:
            mean = sums[step.key] / pixels.shape[0]
            self.means[step.name] = mean[:, step.head] if step.point is None else mean   # delta: (k, queries, hd)

    def _mixed(self, cache: ActivationCache, site_name: str) -> torch.Tensor:
        pattern, v = cache[f"{site_name}.pattern"], cache[f"{site_name}.v"]
        return pattern[..., -v.shape[-2]:].float() @ v.float()


class Patch(Intervention):
    """``with model.patch({name: source}, tokens):`` every forward inside has the named tensors (all tokens, or the
    chosen token indices) replaced by the source's: an :class:`ActivationCache` of another image's capture, a dict of
    tensors by name, or the tensor itself, in canonical layout (batch 1, or the forward's batch)."""

    def __init__(self, model: ModelAdapter, sources: Mapping[str, ActivationCache | Mapping | torch.Tensor],
                 tokens: Sequence[int] | None = None):
        super().__init__(model)
        if not sources:
            raise InterventionError("Name at least one hook point to patch, e.g. {'blocks.4.resid_post': cache}.")
        self.tokens = None if tokens is None else [int(t) for t in tokens]
        if self.tokens is not None and not self.tokens:
            raise InterventionError("tokens=[] patches nothing: pass None for every token, or some indices.")
        self.sources: dict[str, torch.Tensor] = {}
        for pattern, source in sources.items():
            for name in _expand(model, pattern):
                if HEAD_NAME.match(name) or CHANNEL_NAME.match(name):
                    raise InterventionError(f"{name!r}: patching takes hook points (blocks.N.resid_post, "
                                            "blocks.N.attn_out, stages.S, ...), not single heads or channels.")
                self.sources[name] = self._source_tensor(name, source)
        self.names = list(self.sources)

    @staticmethod
    def _source_tensor(name: str, source) -> torch.Tensor:
        if torch.is_tensor(source):
            tensor = source
        elif isinstance(source, (ActivationCache, Mapping)):
            if name not in source:
                raise InterventionError(f"The source for {name!r} does not hold it; capture {name!r} from the "
                                        "source image first.")
            tensor = source[name]
        else:
            raise InterventionError(f"The source for {name!r} must be an ActivationCache, a dict of tensors or a "
                                    f"tensor, not {type(source).__name__}.")
        return tensor.detach()

    def _prepare(self) -> None:
        for name, source in self.sources.items():
            tokens = self.tokens
            if tokens is not None:
                if source.ndim not in (3, 4):
                    raise InterventionError(f"{name!r} is {tuple(source.shape)}: tokens= needs (batch, tokens, dim) "
                                            "or (batch, channels, h, w); patch it whole (tokens=None).")
                count = source.shape[1] if source.ndim == 3 else source[0, 0].numel()
                bad = [t for t in tokens if not -count <= t < count]
                if bad:
                    raise InterventionError(f"{name!r} has {count} tokens; token indices {bad} are out of range.")
            self._add(_point(self.model, name), _TokenEdit(name, value=source, tokens=tokens))


class _TokenEdit(Edit):
    """A patch: the source's values at the chosen tokens (dim 1 of (batch, tokens, dim); the flat cells of a
    (batch, channels, h, w) map); every token when ``tokens`` is None."""

    def __init__(self, name: str, value: torch.Tensor, tokens: list[int] | None):
        super().__init__(name, (Ellipsis,), value, None)
        self.tokens = tokens

    def apply(self, x: torch.Tensor) -> None:
        value = _broadcast_rows(self.value.to(x.device, x.dtype), x.shape[0], self.name)
        if value.shape != x.shape:
            raise InterventionError(f"{self.name}: the source is {tuple(self.value.shape)}, the forward "
                                    f"{tuple(x.shape)} (a different input size?).")
        if self.tokens is None:
            x.copy_(value)
        elif x.ndim == 4:   # flat cells of the map, row by row
            cells = torch.tensor(self.tokens, device=x.device) % (x.shape[2] * x.shape[3])
            rows, cols = cells // x.shape[3], cells % x.shape[3]
            x[:, :, rows, cols] = value[:, :, rows, cols]
        else:
            x[:, self.tokens] = value[:, self.tokens]
