"""Capturing internal tensors by canonical name while the native model runs.

    with model.capture(["blocks.*.attn.pattern", "blocks.11.resid_post"]) as cache:
        out = model.encode_image(pixels)
    cache["blocks.5.attn.pattern"]          # (batch, heads, tokens, tokens)

Hooks are registered on the native modules on entry and removed on exit, also when the forward raises.
Attention values (``attn.q/k/v/scores/pattern``) are recomputed lazily from the recorded attention input, so the
model's fast kernel stays in place and nothing is computed that nobody reads.
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from models.adapters.attention import AttentionSite
from models.errors import CaptureError

ATTENTION_VALUES = ("q", "k", "v", "scores", "pattern")


@dataclass
class HookPoint:
    """A named place in the model: a module's output (or input) plus an optional reshape to canonical layout."""

    module: nn.Module
    kind: str = "output"  # "output", "input", or "static" (read from weights at capture start)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def pick(self, args: tuple, kwargs: dict, output=None) -> torch.Tensor:
        """The tensor this point refers to, from a hook's arguments."""
        if self.kind == "input":
            value = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
        else:
            value = output
        if isinstance(value, (tuple, list)):
            value = value[0]
        if hasattr(value, "logits") and not torch.is_tensor(value):
            value = value.logits
        return value

    def canonical(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.transform(tensor) if self.transform is not None else tensor


@dataclass
class ActivationCache:
    """What one capture recorded. Index by canonical name; ``grad(name)`` gives d(loss)/d(tensor) after backward."""

    names: list[str]
    sites: dict[str, AttentionSite]
    points: dict[str, HookPoint]
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    attention_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    attention_contexts: dict[str, dict] = field(default_factory=dict)
    attention_output_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    attention_mixed_grads: dict[str, torch.Tensor] = field(default_factory=dict)  # d loss / d concat_h(A_h V_h)
    attention_projections: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    _derived: dict[str, torch.Tensor] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self[name]) for name in self.names)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise CaptureError(f"{name!r} was not captured; this capture holds: {', '.join(self.names) or 'nothing'}.")
        if name in self.values:
            return self.values[name]
        site_name, _, value = name.rpartition(".")
        if site_name in self.sites and value in ATTENTION_VALUES:
            return self._attention_value(site_name, value)
        raise CaptureError(f"{name!r} was requested but the model never ran through it inside the capture.")

    def _attention_value(self, site_name: str, value: str) -> torch.Tensor:
        key = f"{site_name}.{value}"
        if key not in self._derived:
            if site_name not in self.attention_inputs:
                raise CaptureError(f"{key!r}: the model never ran through {site_name} inside the capture.")
            site = self.sites[site_name]
            wants_v = value == "v" or f"{site_name}.v" in self.names
            with torch.no_grad():
                q, k, v = self._qkv(site_name, with_v=wants_v)
                derived = {"q": q, "k": k, "v": v}
                if value in ("scores", "pattern"):
                    derived["scores"] = site.scores(q, k, self.attention_contexts.get(site_name))
                    derived["pattern"] = derived["scores"].softmax(dim=-1)
            for name, tensor in derived.items():
                if f"{site_name}.{name}" in self.names:
                    self._derived[f"{site_name}.{name}"] = tensor
            self._derived[key] = derived[value]
        return self._derived[key]

    def _qkv(self, site_name: str, with_v: bool) -> tuple:
        """Q, K, V of one site: the model's own projections where it has them as modules, else recomputed."""
        site = self.sites[site_name]
        recorded = self.attention_projections.get(site_name, {})
        context = self.attention_contexts.get(site_name)
        if recorded and len(recorded) == len(site.projection_modules()):
            return site.qkv_from_projections([recorded[i] for i in range(len(recorded))], context)
        return site.qkv(self.attention_inputs[site_name], with_v=with_v, context=context)

    def grad(self, name: str) -> torch.Tensor:
        """d(loss)/d(captured tensor), available after ``loss.backward()`` inside a ``grad=True`` capture."""
        if name in self.grads:
            return self.grads[name]
        site_name, _, value = name.rpartition(".")
        if value == "pattern" and site_name in self.attention_mixed_grads:
            with torch.no_grad():
                _, _, v = self._qkv(site_name, with_v=True)
                self.grads[name] = self.sites[site_name].pattern_grad_from_mixed(
                    v, self.attention_mixed_grads[site_name])
            return self.grads[name]
        if value == "pattern" and site_name in self.attention_output_grads:
            site = self.sites[site_name]
            with torch.no_grad():
                _, _, v = self._qkv(site_name, with_v=True)
                grad_out = site.grad_output_batch_first(self.attention_output_grads[site_name])
                self.grads[name] = site.pattern_grad(v, grad_out)
            return self.grads[name]
        raise CaptureError(
            f"No gradient for {name!r}: capture it with grad=True, run the forward with gradients enabled and call "
            "backward() on a scalar before reading gradients.")


def expand_names(patterns: Iterable[str] | str, available: list[str], module_names: set[str]) -> list[str]:
    """Concrete hook names matching each glob pattern, in the model's order; unknown names raise CaptureError.

    ``module.<dotted path>`` names any native submodule's output, for layers without a canonical name.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen: list[str] = []
    for pattern in patterns:
        if pattern.startswith("module."):
            path = pattern[len("module."):]
            if path not in module_names:
                close = difflib.get_close_matches(path, sorted(module_names), n=3)
                raise CaptureError(f"No submodule {path!r} in this model. Close: {close or 'none'}.")
            matches = [pattern]
        else:
            matches = fnmatch.filter(available, pattern)
        if not matches:
            close = difflib.get_close_matches(pattern, available, n=5)
            raise CaptureError(
                f"No hook matches {pattern!r}. Close names: {', '.join(close) or 'none'}. "
                "See model.hook_names() for the full list.")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


class Capture:
    """Context manager that registers the hooks a set of names needs and removes every one of them on exit.

    With a ``lock`` (the model's), the capture holds it from the first hook to the last removal, so another
    thread's forward through the same shared model can never run through these hooks.
    """

    def __init__(self, names: list[str], points: dict[str, HookPoint], sites: dict[str, AttentionSite],
                 grad: bool = False, on_enter: Callable[[], None] | None = None,
                 on_exit: Callable[[], None] | None = None, lock=None):
        self.cache = ActivationCache(names=names, sites=sites, points=points)
        self.grad = grad
        self._lock = lock
        self._handles: list = []
        self._hooked_sites: set[str] = set()
        self._on_enter, self._on_exit = on_enter, on_exit

    def __enter__(self) -> ActivationCache:
        if self._lock is not None:
            self._lock.acquire()
        try:
            for name in self.cache.names:
                site_name, _, value = name.rpartition(".")
                if site_name in self.cache.sites and value in ATTENTION_VALUES:
                    self._hook_attention(site_name)
                else:
                    self._hook_point(name, self.cache.points[name])
        except BaseException:
            self._remove()
            if self._lock is not None:
                self._lock.release()
            raise
        if self._on_enter:
            self._on_enter()
        return self.cache

    def __exit__(self, *exc) -> None:
        try:
            self._remove()
            if self._on_exit:
                self._on_exit()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked_sites.clear()

    def _keep_grad(self, name: str, tensor: torch.Tensor, transform: Callable | None) -> None:
        if self.grad and tensor.requires_grad:
            def save(grad: torch.Tensor, name=name) -> None:
                self.cache.grads[name] = transform(grad) if transform else grad
            tensor.register_hook(save)

    def _hook_point(self, name: str, point: HookPoint) -> None:
        if point.kind == "static":  # a weight-derived value, e.g. the position-embedding table
            self.cache.values[name] = point.canonical(None)
        elif point.kind == "input":
            def pre_hook(module, args, kwargs, name=name, point=point):
                raw = point.pick(args, kwargs)
                self.cache.values[name] = point.canonical(raw)
                self._keep_grad(name, raw, point.transform)
            self._handles.append(point.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            def hook(module, args, output, name=name, point=point):
                raw = point.pick(args, {}, output)
                self.cache.values[name] = point.canonical(raw)
                self._keep_grad(name, raw, point.transform)
            self._handles.append(point.module.register_forward_hook(hook))

    def _hook_attention(self, site_name: str) -> None:
        if site_name in self._hooked_sites:
            return
        self._hooked_sites.add(site_name)
        site = self.cache.sites[site_name]

        def pre_hook(module, args, kwargs):
            self.cache.attention_inputs[site_name] = site.input_of(args, kwargs)
            self.cache.attention_contexts[site_name] = site.context_of(args, kwargs)
            self.cache._derived = {k: v for k, v in self.cache._derived.items() if not k.startswith(site_name + ".")}
        self._handles.append(site.module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for index, projection in enumerate(site.projection_modules()):
            def keep(module, args, output, index=index) -> None:
                self.cache.attention_projections.setdefault(site_name, {})[index] = output.detach()
            self._handles.append(projection.register_forward_hook(keep))
        mixed = site.mixed_heads_module() if self.grad else None
        if mixed is not None:
            def mixed_hook(module, args):
                if args and torch.is_tensor(args[0]) and args[0].requires_grad:
                    def save_mixed(grad: torch.Tensor) -> None:
                        self.cache.attention_mixed_grads[site_name] = grad
                    args[0].register_hook(save_mixed)
            self._handles.append(mixed.register_forward_pre_hook(mixed_hook))
        elif self.grad:
            def hook(module, args, output):
                out = site.output_of(output)
                if out.requires_grad:
                    def save(grad: torch.Tensor) -> None:
                        self.cache.attention_output_grads[site_name] = grad
                    out.register_hook(save)
            self._handles.append(site.output_module().register_forward_hook(hook))
