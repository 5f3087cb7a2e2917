"""The catalog's parameter counts are the architectures' own; the Model tab's tree and block counts are right."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models import load_model
from models.catalog import real_models
from models.summary import block_parameters, module_tree


def _architecture_parameters(model_id: str) -> int:
    """Rebuild the architecture on the meta device (no weights, no memory, no network) and count."""
    backend, _, name = model_id.partition(":")
    with torch.device("meta"):
        if backend == "open_clip":
            import open_clip
            model = open_clip.create_model(name.split("/")[0], pretrained=None, device="meta")
        elif backend == "torchvision":
            import torchvision
            model = torchvision.models.get_model(name.split("/")[0], weights=None)
        elif backend == "timm":
            import timm
            model = timm.create_model(name, pretrained=False)
        elif name == "openai/clip-vit-base-patch32":
            import transformers
            model = transformers.CLIPModel(transformers.CLIPConfig())  # the defaults are this checkpoint's
        elif name == "google/vit-base-patch16-224":
            import transformers
            model = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000))
        elif backend == "hf":  # the checkpoint's configuration as the hf backend writes it out
            import transformers

            from models.backends.hf import CHECKPOINT_ARCH, _configs
            cls = getattr(transformers, CHECKPOINT_ARCH[name])
            model = cls(cls.config_class(**_configs(CHECKPOINT_ARCH[name], tiny=False)))
        else:
            raise AssertionError(model_id)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("known", real_models(), ids=lambda m: m.id)
def test_catalog_parameter_counts_are_the_architectures(known):
    assert _architecture_parameters(known.id) == known.parameters


def test_models_list_command_prints_every_known_id():
    result = subprocess.run([sys.executable, "-m", "models", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for known in real_models():
        assert known.id in result.stdout
    assert "offline now" in result.stdout


@pytest.mark.parametrize("name", ["hf_vit", "open_clip_vit", "torchvision_resnet"])
def test_block_parameters_sum_to_the_total(name, tiny_ids):
    model = load_model(tiny_ids[name])
    counts = block_parameters(model)
    assert sum(count for _, count in counts) == model.num_parameters
    assert any(label.startswith(("blocks.", "stages.")) for label, _ in counts)


def test_module_tree_shapes_come_from_a_real_forward(tiny_ids):
    model = load_model(tiny_ids["hf_vit"])
    rows = {row.name: row for row in module_tree(model, max_depth=4)}
    assert rows["vit.layers.0"].output_shape == "1x17x64"
    assert rows["classifier"].output_shape == "1x5"
    assert rows["vit.embeddings.patch_embeddings.projection"].output_shape == "1x64x4x4"
    assert rows["vit"].parameters + rows["classifier"].parameters == model.num_parameters


def test_facts_of_a_vit_b32_clip_architecture():
    """The facts a user checks first, on the real ViT-B/32 architecture (random weights: no download)."""
    model = load_model("open_clip:ViT-B-32/none", device="cpu")
    facts = model.facts()
    assert facts["parameters"] == 151_277_313
    assert facts["input size"] == "224x224" and facts["patch grid"] == "7x7" and facts["tokens"] == 50
    assert facts["context length"] == 77 and facts["vocab size"] == 49_408
    assert facts["layers"] == 12 and facts["heads"] == 12
    assert model.preprocess.mean == pytest.approx((0.4815, 0.4578, 0.4082), abs=1e-4)
    assert model.preprocess.std == pytest.approx((0.2686, 0.2613, 0.2758), abs=1e-4)


def test_bundled_catalog_entries_declare_what_the_loaded_models_have():
    """The pickers trust a catalog entry's capabilities before loading: they must be the loaded model's own."""
    from models.catalog import bundled_models
    from ui.shared_inputs import Capabilities
    from viz.hierarchical import has_stage_attention
    from viz.views import has_token_grid

    for entry in bundled_models():
        model = load_model(entry.id)
        loaded = Capabilities(model.has_text, has_token_grid(model), model.has_feature_maps,
                              has_stage_attention(model))
        assert Capabilities.of_entry(entry) == loaded, entry.id
