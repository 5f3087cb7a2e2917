"""Theoretical receptive fields of any layer, traced from the real model's own operations.

One dry forward runs under a torch function mode that follows every spatial tensor from the input: convolutions and
pools map a unit's input interval through their real kernel size, stride, padding and dilation; padding shifts it;
element-wise ops, concatenations, norms and channel-wise layers take the union of their inputs' intervals (residual
branches, DenseNet concatenation); a global pool makes the field the whole image, and so does a channel gate built
from one (squeeze-excitation), because through it every pixel reaches every unit.

The result per layer and axis is ``lo + i * jump ... hi + i * jump``: the input pixels unit ``i`` can depend on.

Modules that move positions in ways no op-by-op rule follows (window attention partitions, rolls and reshapes the
map; patch merging regroups 2x2 cells into channels) are given as ``mixers``: module -> a sliding window
``(kernel, stride, padding)`` in units of its input grid that bounds what each output cell reads, or None for
global mixing (global or dilated-grid attention). Window attention of size w reads at most the (2w - 1) cells
around a cell (its window, wherever the window boundary and the shift put it): the field is that bound.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from models.errors import ClipscopeModelError


class ReceptiveFieldError(ClipscopeModelError, ValueError):
    """The receptive field of a layer cannot be traced (e.g. it follows an op that resamples the map)."""


@dataclass(frozen=True)
class Span:
    """Input pixels along one axis seen by output unit ``i``: [lo + i * jump, hi + i * jump]; ``whole`` = all."""

    lo: int
    hi: int
    jump: int
    whole: bool = False

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def interval(self, index: int, length: int) -> tuple[int, int]:
        """First and last input pixel of unit ``index``, clipped to an input of ``length`` pixels."""
        if self.whole:
            return 0, length - 1
        return max(0, self.lo + index * self.jump), min(length - 1, self.hi + index * self.jump)

    def through(self, kernel: int, stride: int, padding: int, dilation: int) -> Span:
        """This span after a sliding window (conv or pool) with the given geometry."""
        if self.whole:
            return Span(0, 0, self.jump * stride, whole=True)
        return Span(self.lo - padding * self.jump, self.hi + (dilation * (kernel - 1) - padding) * self.jump,
                    self.jump * stride)

    def union(self, other: Span) -> Span:
        if self.whole or other.whole:
            return Span(0, 0, self.jump, whole=True)
        if self.jump != other.jump:
            raise ReceptiveFieldError("Two branches with different strides meet; their fields cannot be combined.")
        return Span(min(self.lo, other.lo), max(self.hi, other.hi), self.jump)


@dataclass(frozen=True)
class _Field:
    """A traced tensor: which dims are its rows and columns, their sizes, and the span along each. A ``flat`` field
    holds the rows x cols grid row-major in the one dim ``axes[0]`` (a token sequence, e.g. HF Swin's stages)."""

    axes: tuple[int, int]
    shape: tuple[int, int]
    rows: Span
    cols: Span
    flat: bool = False

    def spatial(self, out: torch.Tensor) -> bool:
        """Does ``out`` still hold this field's grid where this field keeps it?"""
        if max(self.axes) >= out.dim():
            return False
        if self.flat:
            return out.shape[self.axes[0]] == self.shape[0] * self.shape[1]
        return (out.shape[self.axes[0]], out.shape[self.axes[1]]) == self.shape


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of every unit of one layer's output map."""

    layer: str
    map_size: tuple[int, int]       # (rows, cols) of the layer's output
    input_size: tuple[int, int]     # (height, width) of the model input
    rows: Span
    cols: Span

    @property
    def size(self) -> tuple[int, int]:
        """Field size in input pixels (rows, cols), before clipping at the image border."""
        return (self.input_size[0] if self.rows.whole else self.rows.size,
                self.input_size[1] if self.cols.whole else self.cols.size)

    @property
    def jump(self) -> tuple[int, int]:
        """Input pixels between neighbouring units (the layer's total stride)."""
        return self.rows.jump, self.cols.jump

    @property
    def is_global(self) -> bool:
        return self.rows.whole or self.cols.whole

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) input pixels, inclusive and clipped to the image, of unit (row, col)."""
        if not (0 <= row < self.map_size[0] and 0 <= col < self.map_size[1]):
            rows, cols = self.map_size
            raise ValueError(f"Unit ({row}, {col}) is outside {self.layer}'s {rows}x{cols} map.")
        top, bottom = self.rows.interval(row, self.input_size[0])
        left, right = self.cols.interval(col, self.input_size[1])
        return top, left, bottom, right


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _argument(args: tuple, kwargs: dict, index: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _tensors(values: Iterable) -> list[torch.Tensor]:
    found = []
    for value in values:
        if torch.is_tensor(value):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found.extend(_tensors(value))
    return found


_CONVS = {F.conv2d, torch.conv2d}
_POOLS = {F.max_pool2d, F.avg_pool2d, torch.max_pool2d,
          F.max_pool2d_with_indices}
_ADAPTIVE_POOLS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch._C._nn.adaptive_avg_pool2d,
                   F.adaptive_max_pool2d_with_indices}
_PADS = {F.pad, torch._C._nn.pad}
_PERMUTES = {torch.permute, torch.Tensor.permute}
_FLATTENS = {torch.flatten, torch.Tensor.flatten}
_TRANSPOSES = {torch.transpose, torch.Tensor.transpose}
_VIEWS = {torch.reshape, torch.Tensor.reshape, torch.Tensor.view}


class _Tracer(TorchFunctionMode):
    """Follows spatial tensors through every torch function call of one forward."""

    def __init__(self, ignore_gates: bool = False):
        super().__init__()
        self.ignore_gates = ignore_gates
        self.fields: dict[int, tuple[torch.Tensor, _Field | None]] = {}  # id -> (tensor kept alive, field or None)

    def field_of(self, tensor: torch.Tensor) -> _Field | None:
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def known(self, tensor: torch.Tensor) -> bool:
        entry = self.fields.get(id(tensor))
        return entry is not None and entry[0] is tensor

    def mark(self, tensor: torch.Tensor, field: _Field | None) -> None:
        self.fields[id(tensor)] = (tensor, field)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in _tensors(list(args) + list(kwargs.values())) if self.known(t)]
        if inputs:
            if torch.is_tensor(out):
                self.mark(out, self._propagate(func, args, kwargs, inputs, out))
            elif isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
                # pools with indices: the values only; splits and chunks: every piece
                pieces = out[:1] if func in _POOLS | _ADAPTIVE_POOLS else [t for t in out if torch.is_tensor(t)]
                for piece in pieces:
                    self.mark(piece, self._propagate(func, args, kwargs, inputs, piece))
        return out

    def _propagate(self, func, args, kwargs, inputs: list[torch.Tensor], out: torch.Tensor) -> _Field | None:
        first = self.field_of(inputs[0])
        if func in _CONVS or func in _POOLS:
            if first is None or inputs[0] is not args[0]:
                return None
            if func in _CONVS:
                weight = _argument(args, kwargs, 1, "weight", None)
                kernel = tuple(weight.shape[-2:])
                stride = _pair(_argument(args, kwargs, 3, "stride", 1))
                padding = _argument(args, kwargs, 4, "padding", 0)
                dilation = _pair(_argument(args, kwargs, 5, "dilation", 1))
                if isinstance(padding, str):  # "valid", or "same" (stride 1; torch puts any odd pixel at the end)
                    same = [d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True)]
                    padding = (0, 0) if padding == "valid" else tuple(same)
                padding = _pair(padding)
            else:
                kernel = _pair(_argument(args, kwargs, 1, "kernel_size", None))
                stride = _argument(args, kwargs, 2, "stride", None)
                stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
                padding = _pair(_argument(args, kwargs, 3, "padding", 0))
                dilation = _pair(_argument(args, kwargs, 4, "dilation", 1)) if "max" in func.__name__ else (1, 1)
            rows = first.rows.through(kernel[0], stride[0], padding[0], dilation[0])
            cols = first.cols.through(kernel[1], stride[1], padding[1], dilation[1])
            return _Field((out.dim() - 2, out.dim() - 1), tuple(out.shape[-2:]), rows, cols)
        if func in _ADAPTIVE_POOLS:
            if first is None:
                return None
            whole = Span(0, 0, first.rows.jump, whole=True)
            return _Field((out.dim() - 2, out.dim() - 1), tuple(out.shape[-2:]), whole, whole)
        if func in _PADS and first is not None and out.dim() >= 2:
            pad = list(_argument(args, kwargs, 1, "pad", ()))
            left, right, top, bottom = (pad + [0, 0, 0, 0])[:4]
            if first.axes != (out.dim() - 2, out.dim() - 1) or len(pad) > 4:
                return None
            rows = first.rows if first.rows.whole else Span(first.rows.lo - top * first.rows.jump,
                                                            first.rows.hi - top * first.rows.jump, first.rows.jump)
            cols = first.cols if first.cols.whole else Span(first.cols.lo - left * first.cols.jump,
                                                            first.cols.hi - left * first.cols.jump, first.cols.jump)
            return _Field(first.axes, tuple(out.shape[-2:]), rows, cols)
        if first is not None and (first.flat and func in _TRANSPOSES | _VIEWS or func in _FLATTENS):
            regridded = self._regrid(func, args, kwargs, first, out)
            if regridded is not None or first.flat:
                return regridded
        if func in _PERMUTES and first is not None:
            dims = _argument(args, kwargs, 1, "dims", None)
            dims = list(dims) if isinstance(dims, (tuple, list)) else [int(d) for d in args[1:]]
            dims = [d % out.dim() for d in dims]
            return _Field((dims.index(first.axes[0]), dims.index(first.axes[1])), first.shape, first.rows, first.cols,
                          first.flat)
        return self._elementwise(inputs, out)

    @staticmethod
    def _regrid(func, args, kwargs, first: _Field, out: torch.Tensor) -> _Field | None:
        """Token sequences: flattening a map's (rows, cols) dims into one, moving that dim, viewing it as a map again;
        anything else these ops do to a traced map loses it."""
        source = args[0]
        if func in _FLATTENS:
            start = _argument(args, kwargs, 1, "start_dim", 0) % source.dim()
            end = _argument(args, kwargs, 2, "end_dim", -1) % source.dim()
            if not first.flat and (start, end) == first.axes and first.axes[1] == first.axes[0] + 1:
                return _Field((start, start), first.shape, first.rows, first.cols, flat=True)
            return None
        if func in _TRANSPOSES and first.flat:
            a, b = (_argument(args, kwargs, i, n, 0) % source.dim() for i, n in ((1, "dim0"), (2, "dim1")))
            axis = first.axes[0]
            moved = b if axis == a else a if axis == b else axis
            return _Field((moved, moved), first.shape, first.rows, first.cols, flat=True)
        if func in _VIEWS and first.flat:
            axis, (rows, cols) = first.axes[0], first.shape
            if tuple(source.shape[:axis]) != tuple(out.shape[:axis]):
                return None
            if out.dim() > axis + 1 and tuple(out.shape[axis:axis + 2]) == (rows, cols) and \
                    tuple(out.shape[axis + 2:]) == tuple(source.shape[axis + 1:]):
                return _Field((axis, axis + 1), first.shape, first.rows, first.cols)
            if tuple(out.shape) == tuple(source.shape):
                return first
        return None

    def _elementwise(self, inputs: list[torch.Tensor], out: torch.Tensor) -> _Field | None:
        """Ops that keep the map (activations, norms, sums, concatenation, 1x1 linear layers): union of fields."""
        result: _Field | None = None
        gate = False
        for tensor in inputs:
            field = self.field_of(tensor)
            if field is None or max(field.axes) >= out.dim():
                continue
            out_shape = (out.shape[field.axes[0]], out.shape[field.axes[1]])
            if field.spatial(out) and tensor.dim() == out.dim():
                if result is None:
                    result = field
                elif result.flat == field.flat:
                    result = replace(result, rows=result.rows.union(field.rows), cols=result.cols.union(field.cols))
            elif field.flat:
                continue
            elif field.shape == (1, 1) and (field.rows.whole or field.cols.whole):
                gate = True  # a broadcast channel gate computed from a global pool
            elif tensor.dim() == out.dim() and out_shape == (1, 1):  # a mean over the map with keepdim
                whole = Span(0, 0, field.rows.jump, whole=True)
                return _Field(field.axes, (1, 1), whole, whole)
        if result is not None and gate and not self.ignore_gates:
            whole = Span(0, 0, result.rows.jump, whole=True)
            result = replace(result, rows=whole, cols=whole)
        return result


Mixer = tuple[int, int, int] | None   # (kernel, stride, padding) of the window bounding what a cell reads; None: all


def _hook_mixers(tracer: _Tracer, mixers: dict[nn.Module, Mixer]) -> list:
    """Hooks that give each mixer's output the field of its input seen through the mixer's window (or global)."""
    handles = []
    for mixer, reach in mixers.items():
        seen: dict[str, _Field | None] = {}

        def pre(_module, args, seen=seen):
            seen["field"] = tracer.field_of(args[0]) if args and torch.is_tensor(args[0]) else None

        def post(_module, _args, output, reach=reach, seen=seen):
            field = seen.get("field")
            out = output[0] if isinstance(output, (tuple, list)) else output
            if field is None or not torch.is_tensor(out) or max(field.axes) >= out.dim():
                return
            kernel, stride, padding = reach if reach is not None else (1, 1, 0)
            # the output grid: a sliding window's (rounded up: Swin pads odd grids before merging)
            shape = tuple(-(-(n + 2 * padding - kernel) // stride) + 1 for n in field.shape)
            if reach is None:
                rows = cols = Span(0, 0, field.rows.jump, whole=True)
            else:
                rows = field.rows.through(kernel, stride, padding, 1)
                cols = field.cols.through(kernel, stride, padding, 1)
            mixed = _Field(field.axes, shape, rows, cols, field.flat)
            if mixed.spatial(out):
                tracer.mark(out, mixed)
        handles.append(mixer.register_forward_pre_hook(pre))
        handles.append(mixer.register_forward_hook(post))
    return handles


def trace_receptive_fields(module: nn.Module, input_size: tuple[int, int], layers: Sequence[str],
                           forward=None, ignore_gates: bool = False,
                           mixers: dict[nn.Module, Mixer] | None = None) -> dict[str, ReceptiveField]:
    """Receptive fields of the outputs of ``layers`` (dotted submodule paths) for an input of ``input_size``.

    ``forward`` runs the model on a pixel tensor (default: ``module`` itself). ``ignore_gates`` follows only the
    convolution path through squeeze-excitation gates (the usual published figure) instead of the whole image they
    really see. ``mixers``: modules whose output field is their input's through a window bound (see the module
    docstring). Raises ReceptiveFieldError for a layer whose output is not a map traced back to the input.
    """
    param = next(module.parameters())
    pixels = torch.zeros(1, 3, *input_size, device=param.device, dtype=param.dtype)
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for path in layers:
        def keep(_module, _args, output, path=path):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            outputs[path] = getattr(tensor, "last_hidden_state", tensor)
        handles.append(module.get_submodule(path).register_forward_hook(keep))
    tracer = _Tracer(ignore_gates)
    handles += _hook_mixers(tracer, mixers or {})
    start = Span(0, 0, 1)
    tracer.mark(pixels, _Field((2, 3), tuple(input_size), start, start))
    try:
        with torch.no_grad(), tracer:
            (forward or module)(pixels)
    finally:
        for handle in handles:
            handle.remove()
    fields = {}
    for path in layers:
        tensor = outputs.get(path)
        field = tracer.field_of(tensor) if torch.is_tensor(tensor) else None
        if field is None:
            raise ReceptiveFieldError(
                f"{path}: its output is not a feature map traced back to the input (pick a convolution or a stage).")
        fields[path] = ReceptiveField(path, field.shape, tuple(input_size), field.rows, field.cols)
    return fields
