"""open_clip backend: text towers (causality, pooling, XLM-R blocks), SigLIP sigmoids, CoCa's pooler, timm trunks.

Every model is a tiny configuration of the real architecture's classes, built by the backend's own ``save_random``
(random weights, stand-in tokenizers where the real one would be downloaded) and loaded back through
``load_model``; everything is checked against the native model's own computation.
"""
from __future__ import annotations

import json

import pytest
import torch

from models.backends import open_clip as backend
from models.errors import UnknownArchitectureError
from models.registry import load_model

TEXTS = ["a red circle", "two blue squares left of a green star"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """arch -> adapter, built on first use and kept for the module."""
    built = {}

    def get(arch: str):
        if arch not in built:
            torch.manual_seed(0)
            built[arch] = load_model(backend.save_random(arch, tmp_path_factory.mktemp(arch) / "model", tiny=True))
        return built[arch]
    return get


def text_tower(model):
    native = model.module
    return getattr(native, "text", native)


def last_text_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    last = len(model.text.blocks) - 1
    with model.capture([f"text.blocks.{last}.resid_post"]) as cache:
        model.encode_text(tokens)
    return cache[f"text.blocks.{last}.resid_post"]


def pixels(model, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(1))


# -- causality, read from the tower ---------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, causal", [("ViT-B-32", True), ("ViT-B-16-SigLIP", False),
                                          ("MobileCLIP-S1", False), ("xlm-roberta-base-ViT-B-32", False)])
def test_text_causality_follows_the_module(models, arch, causal):
    model = models(arch)
    tower = text_tower(model)
    assert model.text.causal is causal
    if hasattr(tower, "attn_mask"):
        assert (tower.attn_mask is not None) is causal
    assert all(model.sites[f"text.blocks.{i}.attn"].causal is causal for i in range(len(model.text.blocks)))
    tokens = model.tokenize(TEXTS)
    with model.capture(["text.blocks.0.attn.pattern"]) as cache:
        model.encode_text(tokens)
    upper = cache["text.blocks.0.attn.pattern"].triu(1)
    assert bool(upper.abs().max() == 0) is causal   # a bidirectional tower attends to later tokens


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16-SigLIP", "MobileCLIP-S1", "xlm-roberta-base-ViT-B-32",
                                  "coca_ViT-B-32", "ViT-L-14-worldwide"])
def test_text_patterns_equal_the_modules_eager_attention(models, arch):
    model = models(arch)
    tokens = model.tokenize(TEXTS)
    eager = backend.eager_patterns(model, pixels(model), tokens)
    names = [n for n in eager if n.startswith("text.")]
    assert len(names) == len(model.text.blocks) > 0
    with model.capture([f"{n}.pattern" for n in names]) as cache:
        model.encode_text(tokens)
    for name in names:
        torch.testing.assert_close(cache[f"{name}.pattern"], eager[name], atol=TOLERANCE, rtol=0)


# -- pooling and projection: last resid_post -> the tower's own norm + projection = encode_text ----------------------
@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-B-16-SigLIP", "ViT-L-14-worldwide", "coca_ViT-B-32"])
def test_pooled_last_token_through_the_projection_is_encode_text(models, arch):
    model = models(arch)
    tokens = model.tokenize(TEXTS)
    projected = model.text.project_tokens(last_text_tokens(model, tokens))
    pooled = projected[torch.arange(len(TEXTS)), model.text.pooled_index(tokens)]
    torch.testing.assert_close(pooled, model.encode_text(tokens), atol=TOLERANCE, rtol=0)


def test_xlm_roberta_mean_readout_through_the_projection_is_encode_text(models):
    """Mean pooling over the non-padding tokens, then the tower's projection (an MLP here, so not per token)."""
    model = models("xlm-roberta-base-ViT-B-32")
    tower = text_tower(model)
    tokens = model.tokenize(TEXTS)
    assert model.text.readout == "mean"
    keep = (tokens != tower.config.pad_token_id).float()[..., None]
    mean = (last_text_tokens(model, tokens) * keep).sum(1) / keep.sum(1)
    with torch.no_grad():
        torch.testing.assert_close(tower.proj(mean), model.encode_text(tokens), atol=TOLERANCE, rtol=0)


def test_metaclip2_pools_at_its_end_of_text_id_not_the_highest_id(models):
    model = models("ViT-L-14-worldwide")
    native = model.module
    assert native.text_pool_type == "eos"
    tokens = model.tokenize(TEXTS)
    index = model.text.pooled_index(tokens)
    assert (tokens[torch.arange(len(TEXTS)), index] == native.text_eos_id).all()
    assert (index != tokens.argmax(dim=-1)).all()   # the mT5-style end token is not the highest id
    assert model.token_strings(tokens[0])[-1] == "</s>"


def test_siglip_pools_the_last_position_through_its_head(models):
    model = models("ViT-B-16-SigLIP")
    tokens = model.tokenize(TEXTS)
    assert (model.text.pooled_index(tokens) == tokens.shape[1] - 1).all()
    assert isinstance(model.text.output, torch.nn.Linear) and "text_embed" in model.points
    with model.capture(["text_embed"]) as cache:
        embedding = model.encode_text(tokens)
    torch.testing.assert_close(cache["text_embed"], embedding)


# -- XLM-R blocks mapped: patterns, padding and gradients ----------------------------------------------------------
def test_xlm_roberta_blocks_have_canonical_names_and_pattern_gradients(models):
    model = models("xlm-roberta-base-ViT-B-32")
    tower = text_tower(model)
    layers = tower.transformer.encoder.layer
    assert len(model.text.blocks) == len(layers)
    tokens = model.tokenize(["a red circle"])
    names = [f"text.blocks.{i}.attn.pattern" for i in range(len(layers))]
    with model.capture(names, grad=True) as cache:
        model.encode_text(tokens).sum().backward()
    padding = tokens[0] == tower.config.pad_token_id
    assert padding.any()
    for name in names:
        pattern = cache[name]
        assert pattern.shape == (1, tower.config.num_attention_heads, tokens.shape[1], tokens.shape[1])
        assert pattern[..., padding].abs().max() == 0   # the padding mask of the call
        assert cache.grad(name).shape == pattern.shape


# -- SigLIP: the logit bias, independent sigmoids -------------------------------------------------------------------
def test_siglip_probabilities_are_sigmoids_of_the_models_own_logits(models):
    model = models("ViT-B-16-SigLIP")
    native = model.module
    assert native.logit_bias is not None and model.probability == "sigmoid"
    assert model.logit_bias == pytest.approx(float(native.logit_bias.detach()))
    images, tokens = pixels(model), model.tokenize(TEXTS)
    with torch.no_grad():
        theirs, _ = native.get_logits(images, tokens)
    ours = model.logits(model.encode_image(images), model.encode_text(tokens))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(model.probabilities(ours), theirs.sigmoid(), atol=1e-5, rtol=1e-5)


def test_openai_style_models_keep_the_softmax(models):
    model = models("ViT-B-32")
    assert model.module.logit_bias is None and model.probability == "softmax" and model.logit_bias is None


# -- CoCa: the attentional pooler is the readout --------------------------------------------------------------------
def test_coca_pool_pattern_equals_the_poolers_eager_attention(models):
    model = models("coca_ViT-B-32")
    visual = model.module.visual
    tower = model.image_tower
    assert tower.readout == "attention_pool"
    images = pixels(model)
    with model.capture(["pool.attn.pattern"]) as cache:
        embedding = model.encode_image(images)
    pattern = cache["pool.attn.pattern"]
    tokens = tower.grid(images)[0] * tower.grid(images)[1] + tower.num_prefix_tokens
    assert pattern.shape == (2, visual.attn_pool.attn.num_heads, visual.attn_pool.query.shape[0], tokens)
    eager = backend.eager_patterns(model, images, None)["pool.attn"]
    torch.testing.assert_close(pattern, eager, atol=TOLERANCE, rtol=0)
    with torch.no_grad():   # the embedding is CoCa's own un-normalised image latent (not its token tuple)
        torch.testing.assert_close(embedding, model.module.encode_image(images, normalize=False))


def test_coca_text_pools_its_appended_class_token(models):
    model = models("coca_ViT-B-32")
    tokens = model.tokenize(TEXTS)
    assert (model.text.pooled_index(tokens) == tokens.shape[1]).all()   # after the text, in the blocks' sequence
    strings = model.token_strings(tokens[0])
    positions, pooled = model.token_positions(tokens[0])
    assert strings[-1] == "<cls>" and positions[-1] == pooled == tokens.shape[1]   # the text, then its class token
    assert len(strings) == len(positions) < tokens.shape[1]                        # no padding shown
    last = len(model.text.blocks) - 1
    with model.capture([f"text.blocks.{last}.resid_post"]) as cache:
        model.encode_text(tokens)
    assert cache[f"text.blocks.{last}.resid_post"].shape[1] == pooled + 1         # the blocks see the class token


def test_coca_project_tokens_is_the_poolers_value_path(models):
    """Identical tokens leave the probe nothing to choose between: the pooled embedding is that token's path."""
    model = models("coca_ViT-B-32")
    visual = model.module.visual
    token = torch.randn(2, 1, visual.transformer.width)
    tokens = token.expand(-1, 7, -1)
    with torch.no_grad():
        pooled, _ = visual._pool(tokens)
        expected = pooled @ visual.proj
        ours = model.image_tower.project_tokens(tokens)
    torch.testing.assert_close(ours, expected[:, None].expand_as(ours), atol=TOLERANCE, rtol=0)


# -- timm trunks ----------------------------------------------------------------------------------------------------
def test_siglip_map_project_tokens_is_the_pools_value_path(models):
    model = models("ViT-B-16-SigLIP")
    visual = model.module.visual
    trunk = visual.trunk
    token = torch.randn(2, 1, trunk.embed_dim)
    tokens = token.expand(-1, 5, -1)
    with torch.no_grad():
        expected = visual.head(trunk.forward_head(trunk.norm(tokens)))
        ours = model.image_tower.project_tokens(tokens)
    torch.testing.assert_close(ours, expected[:, None].expand_as(ours), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("arch", ["EVA02-B-16", "ViT-B-16-SigLIP"])
def test_timm_trunk_towers_match_the_native_image_embedding(models, arch):
    model = models(arch)
    images = pixels(model)
    with torch.no_grad():
        expected = model.module.encode_image(images)
    torch.testing.assert_close(model.encode_image(images), expected)
    assert "image_embed" in model.image_tower.points and model.image_tower.class_names == []


def test_eva_class_token_projection_reproduces_the_embedding(models):
    model = models("EVA02-B-16")
    tower = model.image_tower
    images = pixels(model)
    last = f"blocks.{tower.num_layers - 1}.resid_post"
    with model.capture([last]) as cache:
        embedding = model.encode_image(images)
    torch.testing.assert_close(tower.project_tokens(cache[last])[:, 0], embedding, atol=TOLERANCE, rtol=0)


# -- open_clip's own Attention (custom blocks: q/k norms), image and text ---------------------------------------------
def test_custom_blocks_with_qk_norm_equal_what_the_module_hands_its_kernel(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    custom = {"block_type": "custom", "qk_norm": True}
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8, **custom},
           "text_cfg": {"context_length": 16, "width": 32, "heads": 4, "layers": 2, **custom}}
    native = open_clip.model.CLIP(**cfg).eval()
    for module in native.modules():   # non-trivial q/k norms
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in native.state_dict().items()}, tmp_path / "open_clip_model.safetensors")
    model = load_model(f"open_clip:local-dir:{tmp_path}")
    assert {type(site).__name__ for site in model.sites.values()} == {"OpenClipAttentionSite"}
    images, tokens = pixels(model), model.tokenize(TEXTS)
    eager = backend.eager_patterns(model, images, tokens)
    assert set(eager) == set(model.sites)
    for names, run in (([n for n in eager if not n.startswith("text.")], lambda: model.encode_image(images)),
                       ([n for n in eager if n.startswith("text.")], lambda: model.encode_text(tokens))):
        with model.capture([f"{n}.pattern" for n in names]) as cache:
            run()
        for name in names:
            torch.testing.assert_close(cache[f"{name}.pattern"], eager[name], atol=TOLERANCE, rtol=0)


# -- refusing what is not mapped, before the model is built ---------------------------------------------------------
@pytest.mark.parametrize("change, words", [
    (lambda cfg: cfg["text_cfg"].update(pool_type="none"), "pool_type='none'"),
    (lambda cfg: cfg["vision_cfg"].update(attentional_pool="parallel"), "attentional_pool='parallel'"),
])
def test_unsupported_configs_are_refused_before_building(tmp_path, monkeypatch, change, words):
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    change(cfg)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))

    def never(*args, **kwargs):
        raise AssertionError("the model was built")
    monkeypatch.setattr(open_clip, "create_model_and_transforms", never)
    with pytest.raises(UnknownArchitectureError, match="e.g. open_clip:") as error:
        load_model(f"open_clip:local-dir:{tmp_path}")
    assert words in str(error.value) and str(tmp_path) in str(error.value)
