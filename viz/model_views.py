"""Views of the Model tab: facts and parameters per block, the module tree, the canonical hook names."""
from __future__ import annotations

from models.summary import block_parameters, module_tree
from viz.views import Figures, Subject, any_model, view


@view("model.facts", "Model", any_model)
def facts_view(subject: Subject) -> Figures:
    """What a user checks first about a model, and its parameters per block or stage (table rows)."""
    model = subject.model
    facts = [[key, f"{value:,}" if isinstance(value, int) else str(value)] for key, value in model.facts().items()]
    blocks = [[name, f"{count:,}"] for name, count in block_parameters(model)]
    return {"facts": facts, "blocks": blocks}


@view("model.tree", "Model", any_model)
def tree_view(subject: Subject, max_depth: int = 3) -> Figures:
    """The module tree with each module's output shape for one input and its parameters (table rows)."""
    rows = module_tree(subject.model, max_depth=max_depth)
    return {"tree": [["  " * row.depth + row.name, row.type, row.output_shape, f"{row.parameters:,}"]
                     for row in rows]}


@view("model.hooks", "Model", any_model)
def hooks_view(subject: Subject) -> Figures:
    """Every canonical name ``model.capture([...])`` takes, one per line."""
    return {"hooks": "\n".join(subject.model.hook_names())}
