"""Views of the CNN tab: stages, feature maps, first-layer filters, any kernel, receptive fields (theoretical and
effective), class activation maps (CNNs and ViTs), the prediction, and the inductive-bias probes."""
from __future__ import annotations

from models import shapes
from viz.cam import class_labels, default_cam_layer, output_index
from viz.cnn import SCALES, effective_radius, first_conv, kernel_slices, layer_module, rgb_kernel_tiles, stage_names
from viz.cnn_figures import (
    cam_figure,
    cue_conflict_figure,
    feature_grid_figure,
    kernel_figure,
    layer_map_figure,
    prediction_figure,
    receptive_field_figure,
    rgb_filters_figure,
    shift_figure,
    stage_shapes_figure,
)
from viz.domain import domain_notes
from viz.probes import cue_conflict, shift_probe
from viz.views import Figures, Subject, any_model, has_token_grid, view

DEFAULT_PROMPTS = ("a red circle", "a blue star", "a green square")
CUE_CONFLICT_IMAGES = 60
CUE_CONFLICT_SEED = 515_151  # held out: training seeds are >= shapes.TRAIN_SEED_START


def has_feature_maps(model) -> bool:
    return model.has_feature_maps


def has_convolutions(model) -> bool:
    """Feature maps and at least one convolution whose kernels the kernel view can show."""
    tower = model.image_tower
    return model.has_feature_maps and callable(getattr(tower, "conv_layers", None)) and bool(tower.conv_layers())


def has_spatial_output(model) -> bool:
    """A CAM or probe needs a map over the image: feature maps, or one token grid."""
    return model.has_feature_maps or has_token_grid(model)


def _prompts(model, prompts) -> list[str] | None:
    """The prompts a text model scores the image against (its classes here); None for classifiers."""
    if not model.has_text:
        return None
    chosen = [p.strip() for p in (prompts or []) if p and p.strip()]
    if not chosen:
        raise ValueError("Type the prompts (one per line): a text model's CAM and prediction explain one of them.")
    return chosen


def summary_text(subject: Subject) -> str:
    session = subject.cnn()
    tower = session.tower
    kind = ("CNN-style feature maps" if session.is_cnn else
            "ViT (CAMs, prediction and probes only; maps need a CNN)")
    summary = (f"**{subject.model.model_id}**: {kind}, input {session.pixels.shape[-2]}x{session.pixels.shape[-1]}, "
               f"{len(tower.class_names) or 'no'} class names.")
    return "\n\n".join([summary, *domain_notes(subject.model, [subject.image])])  # what the model knows


@view("cnn.stages", "CNN", has_feature_maps)
def stages_view(subject: Subject) -> Figures:
    """Shape of the input and of every stage's output for this image."""
    session = subject.cnn()
    return {"stages": stage_shapes_figure(session.shapes()), "summary": summary_text(subject)}


@view("cnn.prediction", "CNN", any_model)
def prediction_view(subject: Subject, prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS, k: int = 5) -> Figures:
    """Top-k outputs: a classifier's classes (or output indices), or a text model's prompts."""
    session = subject.cnn()
    prediction = session.prediction(_prompts(subject.model, prompts), int(k))
    return {"prediction": prediction_figure(prediction, f"Top-{len(prediction.labels)} prediction"),
            "summary": summary_text(subject)}


def default_map_layer(session) -> str:
    return stage_names(session.tower)[-1]


@view("cnn.feature_maps", "CNN", has_feature_maps,
      checks=({"k": 4}, {"channels": [0, 1], "scale": "global"}))
def feature_maps_view(subject: Subject, layer: str | None = None, k: int = 16, channels: list[int] | None = None,
                      scale: str = "per unit") -> Figures:
    """A grid of one layer's channel maps: the top-k by mean activation, or chosen channels."""
    session = subject.cnn()
    layer = layer or default_map_layer(session)
    if scale not in SCALES:
        raise ValueError(f"Colour scale {scale!r}: use one of {', '.join(SCALES)}.")
    scaled, chosen = session.feature_maps(layer, int(k), list(channels) if channels else None, scale)
    c, h, w = session.layer_maps(layer).shape
    how = "top channels by mean activation" if not channels else "chosen channels"
    return {"feature_maps": feature_grid_figure(
        scaled, chosen, f"{layer}: {len(chosen)} of {c} channels ({h}x{w}), {how}, colour scale {scale}",
        value_range=session.display_range(layer, scale))}


@view("cnn.filters", "CNN", has_feature_maps)
def filters_view(subject: Subject) -> Figures:
    """The first convolution's kernels as RGB tiles."""
    session = subject.cnn()
    session.require_cnn()
    path, conv = first_conv(session.tower)
    k = conv.kernel_size
    return {"filters": rgb_filters_figure(rgb_kernel_tiles(conv.weight),
                                          f"{path}: {conv.out_channels} kernels {k[0]}x{k[1]} over RGB (grey = 0)")}


@view("cnn.kernel", "CNN", has_convolutions)
def kernel_view(subject: Subject, layer: str | None = None, out_channel: int = 0) -> Figures:
    """One output channel's kernel of any convolution (default: the last one), one tile per input channel."""
    session = subject.cnn()
    convs = [n for n in session.layers() if n.startswith("module.")]
    layer = layer or (convs[-1] if convs else None)
    if not layer:
        raise ValueError("Pick a convolution layer.")
    conv = layer_module(session.tower, layer)
    kernel = kernel_slices(conv, int(out_channel))
    return {"kernel": kernel_figure(kernel, f"{layer}, output channel {int(out_channel)}: {kernel.shape[0]} input "
                                            f"channels, {kernel.shape[1]}x{kernel.shape[2]}")}


@view("cnn.receptive_field", "CNN", has_feature_maps)
def receptive_field_view(subject: Subject, layer: str | None = None,
                         unit: tuple[int, int] | None = None) -> Figures:
    """A unit's theoretical receptive field (box) and effective one (gradient heat); default: the centre unit of
    the last stage."""
    session = subject.cnn()
    layer = layer or default_map_layer(session)
    field = session.field(layer)
    row, col = unit if unit is not None else (field.map_size[0] // 2, field.map_size[1] // 2)
    row, col = min(int(row), field.map_size[0] - 1), min(int(col), field.map_size[1] - 1)
    erf = session.effective_field(layer, (row, col))
    size, jump = field.size, field.jump
    note = ("every unit sees the whole image (a global channel gate precedes it)" if field.is_global else
            f"theoretical field {size[0]}x{size[1]} px, stride {jump[0]} px")
    top, left, bottom, right = field.box(row, col)
    radius = effective_radius(erf, ((top + bottom) / 2, (left + right) / 2), 0.9)
    text = (f"**{layer}**, unit ({row}, {col}) of its {field.map_size[0]}x{field.map_size[1]} map: {note}. "
            f"Effective field: 90% of the gradient lies within {radius:.1f} px of the unit's centre. "
            "Click the input image to move.")
    maps = session.layer_maps(layer).mean(dim=0).numpy()
    return {"field": receptive_field_figure(session.image, field, (row, col), erf,
                                            f"{layer} unit ({row}, {col}): theoretical box, effective heat"),
            "layer_map": layer_map_figure(maps, (row, col), f"{layer}: mean over channels, unit ({row}, {col})"),
            "text": text, "unit": (row, col)}


@view("cnn.cam", "CNN", has_spatial_output, checks=({}, {"method": "Eigen-CAM"}))
def cam_view(subject: Subject, method: str = "Grad-CAM", layer: str | None = None, target: str | int | None = None,
             prompts: tuple[str, ...] | list[str] = DEFAULT_PROMPTS) -> Figures:
    """A class activation map for one output (a class, an index, or a text model's prompt; default: the top one)."""
    session = subject.cnn()
    model = subject.model
    chosen = _prompts(model, prompts)
    labels = class_labels(model, chosen)
    index = output_index(labels, target, session.scores(chosen))
    cam = session.cam(index, method, layer or None, chosen)
    name = labels[index] if index < len(labels) else model.output_label(index)
    return {"cam": cam_figure(session.image, cam, f"{method} at {layer or default_cam_layer(model)} for “{name}”")}


@view("cnn.probes", "CNN", has_spatial_output, checks=({"max_shift": 2, "cue_images": 4},))
def probes_view(subject: Subject, compare: tuple = (), max_shift: int = 16,
                cue_images: int = CUE_CONFLICT_IMAGES) -> Figures:
    """Translation probe on this image and the cue-conflict test, for the model and any models to compare."""
    image = subject.require_image()
    models = [subject.model, *compare]
    probes = [shift_probe(m, image, int(max_shift)) for m in models]
    examples = shapes.make_cue_conflict(int(cue_images), seed=CUE_CONFLICT_SEED)
    results, skipped = [], []
    for model in models:
        try:
            results.append(cue_conflict(model, examples))
        except ValueError as exc:
            skipped.append(str(exc))
    note = " ".join(skipped) or "Every model was scored on the cue-conflict images."
    # what each model knows: the shift probe runs on this image, the cue conflict on procedural shapes
    notes = [n for m in models for n in domain_notes(m, [image])]
    note = "\n\n".join([note, *dict.fromkeys(notes)])
    gallery = [(e.image, f"shape {e.shape_label}, texture {e.texture_label}") for e in examples[:8]]
    return {"shift": shift_figure(probes), "cue_conflict": cue_conflict_figure(results) if results else None,
            "gallery": gallery, "note": note}
