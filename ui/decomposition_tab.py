"""Decomposition tab: CLIP's image-text score split into layers, heads and patches; zero-shot accuracy of the bundled
world with early layers and MLPs mean-ablated; TextSpan texts per head. Widgets only: every figure is a view of
``viz/decomposition_views.py``."""
from __future__ import annotations

import gradio as gr

from models.adapters.decompose import decomposition_problem
from ui.errors import user_errors
from ui.export import Plot
from ui.model_access import load_model
from ui.shared_inputs import SharedInputs
from ui.staleness import clear_on_change
from viz.decomposition_views import DEFAULT_PROMPT
from viz.views import Subject, run_view

TABLE_HEADERS = ["depth d", "attention < d ablated", "+ all MLPs ablated", "layer d-1 alone"]
SPAN_HEADERS = ["head", "step", "text", "variance added", "explained so far", "colour share", "shape share"]


def load_decomposable(model_id: str):
    """Load ``model_id`` and check that its image embedding decomposes (a CLIP with a class-token readout)."""
    model = load_model((model_id or "").strip())
    problem = decomposition_problem(model)
    if problem is not None:
        raise gr.Error(f"{model.model_id}: {problem}", print_exception=False)
    return model


def _subject(model_id: str, image) -> Subject:
    if image is None:
        raise gr.Error("Upload an image or pick an example first.", print_exception=False)
    return Subject(load_decomposable(model_id), image)


@user_errors
def decompose(model_id: str, image, prompt: str, layer: float, head: float):
    """The score's terms for the prompt, and the chosen head's per-patch map."""
    subject = _subject(model_id, image)
    score = run_view("decomposition.score", subject, prompt=prompt)
    patches = run_view("decomposition.head_patches", subject, layer=int(layer), head=int(head), prompt=prompt)
    return score["heads"], score["layers"], score["notice"], patches["patches"], patches["notice"]


@user_errors
def head_patches(model_id: str, image, prompt: str, layer: float, head: float):
    """One head's share of the score per patch."""
    figures = run_view("decomposition.head_patches", _subject(model_id, image), layer=int(layer), head=int(head),
                       prompt=prompt)
    return figures["patches"], figures["notice"]


@user_errors
def ablation(model_id: str, n: float):
    """Zero-shot accuracy of held-out scenes against the depth of mean-ablated layers."""
    figures = run_view("decomposition.ablation", Subject(load_decomposable(model_id)), n=int(n))
    return figures["accuracy"], figures["table"], figures["notice"]


@user_errors
def span(model_id: str, heads: str, top: float, steps: float, vocabulary: str, n: float):
    """TextSpan texts per head."""
    figures = run_view("decomposition.text_span", Subject(load_decomposable(model_id)), heads=heads or "",
                       top=int(top), steps=int(steps), vocabulary=vocabulary or "", n=int(n))
    return figures["variance"], figures["table"], figures["notice"]


def build_decomposition_tab(shared: SharedInputs) -> None:
    gr.Markdown("**Decomposition** (Gandelsman, Efros & Steinhardt, ICLR 2024): with the final norm frozen at the "
                "image's own statistics, a CLIP image embedding is exactly the sum of what each layer's heads (per "
                "source token) and MLPs wrote into the class token, plus the embeddings; so the image-text score "
                "splits into the same terms. Works on CLIP models with a class-token readout.")
    model_id, image = shared.pickers["clip"], shared.image
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt to score the image against", value=DEFAULT_PROMPT)
            layer = gr.Number(label="Layer (−1 = last)", value=-1, precision=0)
            head = gr.Number(label="Head", value=0, precision=0, minimum=0)
            decompose_button = gr.Button("Decompose", variant="primary")
            head_button = gr.Button("Show this head's patches")
        with gr.Column(scale=2):
            heads_plot = Plot(label="Each head's share of the score")
            layers_plot = Plot(label="Terms of the score per layer")
            score_notice = gr.Markdown()
            patches_plot = Plot(label="The head's share per patch")
            patches_notice = gr.Markdown()
    gr.Markdown("**Mean-ablation against depth**: held-out scenes of the bundled world, the direct contributions of "
                "the attention of layers < d (and of every MLP) replaced by their mean over the scenes, zero-shot "
                "over the 36 class prompts.")
    with gr.Row():
        with gr.Column(scale=1):
            n = gr.Slider(12, 360, value=72, step=12, label="Held-out scenes")
            ablation_button = gr.Button("Mean-ablate", variant="primary")
        with gr.Column(scale=2):
            accuracy_plot = Plot(label="Zero-shot top-1")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Accuracy table", interactive=False)
            ablation_notice = gr.Markdown()
    gr.Markdown("**TextSpan**: per head, the few texts whose embedding directions explain most of the variance of "
                "the head's direct contributions over the scenes (greedy: pick, project out, repeat).")
    with gr.Row():
        with gr.Column(scale=1):
            heads = gr.Textbox(label="Heads as layer.head, comma-separated (empty: the largest-variance ones)")
            top = gr.Slider(1, 8, value=4, step=1, label="How many heads when none are typed")
            steps = gr.Slider(1, 10, value=5, step=1, label="Texts per head")
            vocabulary = gr.Textbox(label="Candidate texts, one per line or comma-separated (empty: the bundled "
                                          "world's words)", lines=3)
            span_button = gr.Button("TextSpan", variant="primary")
        with gr.Column(scale=2):
            variance_plot = Plot(label="Variance per head")
            span_table = gr.Dataframe(headers=SPAN_HEADERS, label="TextSpan", interactive=False)
            span_notice = gr.Markdown()
    clear_on_change([image, model_id], [heads_plot, layers_plot, patches_plot], score_notice)
    clear_on_change([model_id], [accuracy_plot, table], ablation_notice)
    clear_on_change([model_id], [variance_plot, span_table], span_notice)
    decompose_button.click(decompose, [model_id, image, prompt, layer, head],
                           [heads_plot, layers_plot, score_notice, patches_plot, patches_notice],
                           api_name="decomposition_score", concurrency_limit=2)
    head_button.click(head_patches, [model_id, image, prompt, layer, head], [patches_plot, patches_notice],
                      api_name="decomposition_head", concurrency_limit=2)
    ablation_button.click(ablation, [model_id, n], [accuracy_plot, table, ablation_notice],
                          api_name="decomposition_ablation", concurrency_limit=2)
    span_button.click(span, [model_id, heads, top, steps, vocabulary, n], [variance_plot, span_table, span_notice],
                      api_name="decomposition_text_span", concurrency_limit=2)
