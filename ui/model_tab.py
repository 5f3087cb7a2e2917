"""Model tab: pick any model id, see its facts, parameters per block, module tree and hook names."""
from __future__ import annotations

import gradio as gr

from ui.errors import user_errors
from ui.model_access import labelled_choices, load_model, typing_hint
from viz.domain import model_tab_note
from viz.reproduce import reproduce_code
from viz.views import Subject, run_view

FACT_HEADERS = ["fact", "value"]
BLOCK_HEADERS = ["block / stage", "parameters"]
TREE_HEADERS = ["module", "type", "output shape", "parameters"]


@user_errors
def describe_model(model_id: str, progress: gr.Progress = gr.Progress()) -> tuple:
    """Load ``model_id`` and return the four tables the tab shows, then what the model knows (bundled models: their
    training world and real checkpoints to load instead; empty for a real checkpoint)."""
    if not model_id or not model_id.strip():
        raise gr.Error("Type or pick a model id first, e.g. bundled:mini-clip.", print_exception=False)
    progress(0.1, desc=f"Loading {model_id}")
    model = load_model(model_id.strip())
    progress(0.6, desc="Running one input through it")
    subject = Subject(model)
    facts = run_view("model.facts", subject)
    return (facts["facts"], facts["blocks"], run_view("model.tree", subject)["tree"],
            run_view("model.hooks", subject)["hooks"], model_tab_note(model))


@user_errors
def copy_python(model_id: str) -> str:
    """The notebook code that reads this tab's tables (facts, parameters per block, module tree, hook names)."""
    if not model_id or not model_id.strip():
        raise gr.Error("Type or pick a model id first, e.g. bundled:mini-clip.", print_exception=False)
    return reproduce_code(model_id.strip(), None, [("model.facts", {}), ("model.tree", {}), ("model.hooks", {})],
                          show="facts", with_image=False)


def build_model_tab(app: gr.Blocks, model_choices: list[str], default_model: str | None) -> None:
    """Widgets and events of the Model tab (call inside ``app``); the default model is described on page load."""
    gr.Markdown("Load any model by id and read its structure: module tree with output shapes for one input, "
                "parameters per block, and the canonical hook names you can capture.")
    with gr.Row():
        model_id = gr.Dropdown(labelled_choices(model_choices), value=default_model, allow_custom_value=True,
                               label="Model id", info=typing_hint(), scale=4)
        with gr.Column(scale=1, min_width=160):
            load = gr.Button("Load", variant="primary")
            copy_button = gr.Button("Copy as Python", size="sm")
    code = gr.Code(language="python", label="Python that reads the same tables in a notebook", visible=False,
                   interactive=False)
    known = gr.Markdown()  # what a bundled model was trained on, and the real checkpoints to load instead
    with gr.Row():
        facts = gr.Dataframe(headers=FACT_HEADERS, label="Facts", interactive=False)
        blocks = gr.Dataframe(headers=BLOCK_HEADERS, label="Parameters per block", interactive=False)
    tree = gr.Dataframe(headers=TREE_HEADERS, label="Module tree (output shape for one input)", interactive=False,
                        max_height=480)
    hooks = gr.Textbox(label="Hook names (model.capture([...]))", lines=8, max_lines=20)
    outputs = [facts, blocks, tree, hooks, known]
    load.click(describe_model, inputs=model_id, outputs=outputs, api_name="describe_model",
               concurrency_limit=2)
    if default_model:
        app.load(describe_model, inputs=model_id, outputs=outputs, api_name=False, concurrency_limit=2)
    copy_button.click(copy_python, model_id, code, api_name="model_copy_python").success(
        lambda: gr.update(visible=True), None, code, api_name=False)
