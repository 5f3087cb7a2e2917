"""The transformers backend: each architecture built tiny by the coverage builder, loaded back through load_model,
its recomputed attention checked against transformers' own eager attention, its readouts against the model's own
outputs (text pooling, SigLIP's MAP head and sigmoid logits, SigLIP 2's patch inputs)."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from models.backends.hf import encoder_text_stack, save_random, siglip2_inputs
from models.errors import UnknownArchitectureError
from models.registry import load_model

ATOL = 1e-5
TEXTS = ["a red circle", "two small blue squares to the left of a big green star"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """arch -> directory, each built once (tiny) by the coverage builder."""
    root = tmp_path_factory.mktemp("hf")
    cache: dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in cache:
            torch.manual_seed(0)
            cache[arch] = save_random(arch, root / arch, tiny=True).removeprefix("hf:")
        return cache[arch]
    return get


def _pixels(model, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(3))


def _eager(directory: str, arch: str):
    return getattr(transformers, arch).from_pretrained(directory, attn_implementation="eager").eval()


def _text_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (tokens != pad_id).long()


@pytest.mark.parametrize("arch", ["ChineseCLIPModel", "AltCLIPModel"])
def test_bert_style_text_attention_with_padding_equals_eager(arch, built):
    model = load_model(f"hf:{built(arch)}")
    tokens = model.tokenize(TEXTS)
    pad_id = model.module.config.text_config.pad_token_id
    mask = _text_mask(tokens, pad_id)
    assert (mask == 0).any() and (mask[0] == 0).sum() > (mask[1] == 0).sum()   # both texts padded, unequally
    with model.capture("text.blocks.*.attn.pattern") as cache:
        model.encode_text(tokens)
    eager = _eager(built(arch), arch)
    with torch.no_grad():
        reference = eager.text_model(input_ids=tokens, attention_mask=mask, output_attentions=True).attentions
    assert len(reference) == len(model.text.blocks)
    for i, expected in enumerate(reference):
        got = cache[f"text.blocks.{i}.attn.pattern"]
        torch.testing.assert_close(got, expected.float(), atol=ATOL, rtol=0)
        assert got[..., mask[0] == 0][0].abs().max() == 0   # nobody attends to padding
    assert model.sites["text.blocks.0.attn"].kind == "HFEncoderAttentionSite"
    assert not model.text.causal


def test_encoder_text_stack_reads_what_each_attention_reads():
    """ln1 of block i is the norm whose output enters block i's attention (post-norm: the previous block's)."""
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16)
    bert = transformers.BertModel(config).eval()
    stack = encoder_text_stack(bert)
    assert len(stack.blocks) == 3 and not stack.causal
    seen: dict[str, torch.Tensor] = {}

    def keep_norm(module, args, output, i):
        seen.setdefault(f"ln{i}", output)

    def keep_input(module, args, kwargs, i):
        seen.setdefault(f"in{i}", args[0] if args else kwargs["hidden_states"])

    handles = [norm.register_forward_hook(lambda m, a, out, i=i: keep_norm(m, a, out, i))
               for i, norm in enumerate(stack.ln1)]
    handles += [attn.register_forward_pre_hook(lambda m, a, kw, i=i: keep_input(m, a, kw, i), with_kwargs=True)
                for i, attn in enumerate(stack.attn)]
    with torch.no_grad():
        bert(input_ids=torch.randint(0, 50, (2, 7)))
    for handle in handles:
        handle.remove()
    for i in range(3):
        torch.testing.assert_close(seen[f"ln{i}"], seen[f"in{i}"], atol=0, rtol=0)


def test_encoder_text_stack_refuses_a_non_bert_encoder():
    with pytest.raises(UnknownArchitectureError, match="BERT"):
        encoder_text_stack(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("arch", ["CLIPModel", "SiglipModel", "Siglip2Model", "ChineseCLIPModel", "AltCLIPModel"])
def test_pooled_text_index_reproduces_get_text_features(arch, built):
    model = load_model(f"hf:{built(arch)}")
    native, text = model.module, model.module.text_model
    tokens = model.tokenize(TEXTS)
    last = len(model.text.blocks) - 1
    names = [f"text.blocks.{last}.resid_post"] + (["text.final_norm"] if model.text.final_norm is not None else [])
    with model.capture(names) as cache:
        embedding = model.encode_text(tokens)
    rows = torch.arange(len(tokens))
    pooled = model.text.pooled_index(tokens)
    with torch.no_grad():
        if arch == "CLIPModel":
            rebuilt = native.text_projection(cache["text.final_norm"][rows, pooled])
        elif arch.startswith("Siglip"):
            assert (pooled == tokens.shape[1] - 1).all()          # the last position, padding or not
            rebuilt = text.head(cache["text.final_norm"][rows, pooled])
        elif arch == "ChineseCLIPModel":
            assert (pooled == 0).all()                             # [CLS]
            rebuilt = native.text_projection(cache[f"text.blocks.{last}.resid_post"][rows, pooled])
        else:
            assert (pooled == 0).all()                             # <s>
            rebuilt = native.text_projection(text.transformation(cache["text.final_norm"])[rows, pooled])
        mask = _text_mask(tokens, native.config.text_config.pad_token_id)
        kwargs = {"attention_mask": mask} if arch in ("ChineseCLIPModel", "AltCLIPModel") else {}
        own = native.get_text_features(input_ids=tokens, **kwargs).pooler_output
        per_token = model.text.project_tokens(cache[f"text.blocks.{last}.resid_post"])[rows, pooled]
    torch.testing.assert_close(rebuilt, embedding, atol=ATOL, rtol=0)
    torch.testing.assert_close(own, embedding, atol=ATOL, rtol=0)
    torch.testing.assert_close(per_token, embedding, atol=ATOL, rtol=0)
    assert model.text.causal == (arch == "CLIPModel")


@pytest.mark.parametrize("arch", ["SiglipModel", "Siglip2Model"])
def test_siglip_pool_and_sigmoid_logits_equal_the_models_own(arch, built):
    model = load_model(f"hf:{built(arch)}")
    native = model.module
    pixels = _pixels(model)
    tokens = model.tokenize(TEXTS)
    vit = model.image_tower
    assert vit.readout == "attention_pool" and vit.prefix_tokens == [] and model.probability == "sigmoid"
    with model.capture(["pool.attn.pattern", f"blocks.{vit.num_layers - 1}.resid_post"]) as cache:
        image = model.encode_image(pixels)
    text = model.encode_text(tokens)
    with torch.no_grad():
        inputs = siglip2_inputs(pixels, vit.patch_size[0]) if arch == "Siglip2Model" else {"pixel_values": pixels}
        own = native(input_ids=tokens, **inputs)
    torch.testing.assert_close(model.logits(image, text), own.logits_per_image.float(), atol=ATOL, rtol=0)
    probabilities = model.probabilities(model.logits(image, text))
    torch.testing.assert_close(probabilities, own.logits_per_image.sigmoid(), atol=ATOL, rtol=0)
    # the probe's attention over every token of the last block, as the head's own nn.MultiheadAttention weighs it
    head = native.vision_model.head
    tokens_in = native.vision_model.post_layernorm(cache[f"blocks.{vit.num_layers - 1}.resid_post"])
    with torch.no_grad():
        expected = head.attention(head.probe.expand(len(pixels), -1, -1), tokens_in, tokens_in, need_weights=True,
                                  average_attn_weights=False)[1]
    grid = vit.grid()
    assert cache["pool.attn.pattern"].shape == (2, vit.num_heads, 1, grid[0] * grid[1])
    torch.testing.assert_close(cache["pool.attn.pattern"], expected, atol=ATOL, rtol=0)
    # a token's own path (per-patch zero-shot) is the embedding of an image whose every token is that token
    last = cache[f"blocks.{vit.num_layers - 1}.resid_post"]
    with torch.no_grad():
        uniform = head(native.vision_model.post_layernorm(last[:1, 3:4].expand(1, last.shape[1], -1)))
    torch.testing.assert_close(vit.project_tokens(last[:1, 3:4])[:, 0], uniform, atol=ATOL, rtol=0)


def test_siglip2_patches_grid_and_filters_follow_its_processor(built):
    model = load_model(f"hf:{built('Siglip2Model')}")
    vit = model.image_tower
    processor = transformers.AutoImageProcessor.from_pretrained(built("Siglip2Model"))
    images = torch.rand(2, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(5))
    theirs = processor(images=list(images), do_resize=False, do_rescale=False, do_normalize=False,
                       return_tensors="pt")
    ours = siglip2_inputs(images, vit.patch_size[0])
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"].float(), atol=0, rtol=0)
    assert ours["spatial_shapes"].tolist() == theirs["spatial_shapes"].tolist() == [list(vit.grid())] * 2
    assert ours["pixel_attention_mask"].tolist() == theirs["pixel_attention_mask"].tolist()
    # the Linear patch projection read as conv filters gives the same patch embeddings as the Linear itself
    filters = vit.patch_embed_weight()
    linear = vit.layout.patch_embed
    conv = torch.nn.functional.conv2d(images, filters, linear.bias, stride=vit.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(conv.flatten(2).transpose(1, 2), linear(ours["pixel_values"]), atol=1e-5, rtol=0)


def test_dinov3_rotary_attention_equals_eager_and_needs_the_rotation(built):
    model = load_model(f"hf:{built('DINOv3ViTModel')}")
    assert model.prefix_tokens == ["cls", "reg0", "reg1", "reg2", "reg3"]
    assert model.sites["blocks.0.attn"].kind == "HFRotaryAttentionSite"
    pixels = _pixels(model)
    with model.capture("blocks.*.attn.pattern") as cache:
        output = model.forward(pixels)
    eager = _eager(built("DINOv3ViTModel"), "DINOv3ViTModel")
    with torch.no_grad():
        own = eager(pixel_values=pixels, output_attentions=True)
    for i, expected in enumerate(own.attentions):
        torch.testing.assert_close(cache[f"blocks.{i}.attn.pattern"], expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(output, own.pooler_output, atol=ATOL, rtol=0)
    # without the recorded rotary tables the pattern is a different one: the rotation is what makes it equal
    site = model.sites["blocks.0.attn"]
    q, k, _ = site.qkv(cache.attention_inputs["blocks.0.attn"], with_v=False, context={})
    assert (site.pattern(q, k) - own.attentions[0]).abs().max() > 1e-3


@pytest.mark.parametrize("shared", [False, True])
def test_beit_relative_position_bias_equals_eager(shared, tmp_path):
    config = transformers.BeitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     image_size=32, patch_size=8, num_labels=3, use_mean_pooling=True,
                                     use_relative_position_bias=not shared, use_shared_relative_position_bias=shared,
                                     use_absolute_position_embeddings=False, layer_scale_init_value=0.1)
    torch.manual_seed(0)
    native = transformers.BeitForImageClassification(config).eval()
    with torch.no_grad():
        for name, parameter in native.named_parameters():
            if name.endswith("relative_position_bias_table"):
                parameter.normal_(std=1.0)
    native.save_pretrained(tmp_path)
    transformers.BeitImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert model.readout == "mean" and model.layout.final_norm is None
    pixels = _pixels(model)
    with model.capture("blocks.*.attn.pattern") as cache:
        logits = model.forward(pixels)
    eager = _eager(str(tmp_path), "BeitForImageClassification")
    with torch.no_grad():
        own = eager(pixel_values=pixels, output_attentions=True)
    torch.testing.assert_close(logits, own.logits, atol=ATOL, rtol=0)
    for i, expected in enumerate(own.attentions):
        torch.testing.assert_close(cache[f"blocks.{i}.attn.pattern"], expected, atol=ATOL, rtol=0)
    site = model.sites["blocks.0.attn"]   # the bias is what the module was given: dropping it changes the pattern
    q, k, _ = site.qkv(cache.attention_inputs["blocks.0.attn"], with_v=False)
    assert (site.pattern(q, k) - own.attentions[0]).abs().max() > 1e-3


def test_clip_vision_model_is_a_vit_without_class_names(built):
    model = load_model(f"hf:{built('CLIPVisionModel')}")
    pixels = _pixels(model)
    out = model.run_image(pixels)
    with torch.no_grad():
        own = model.module(pixel_values=pixels).pooler_output
    torch.testing.assert_close(out, own, atol=0, rtol=0)
    assert model.family == "vit" and model.class_names == [] and model.output_label(3) == "output 3"


def test_unsupported_model_type_is_refused_from_its_config_alone(tmp_path):
    config = transformers.ViTMAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    config.architectures = ["ViTMAEModel"]
    config.save_pretrained(tmp_path)   # no weights: the refusal must come before anything is built
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "vit_mae"
    with pytest.raises(UnknownArchitectureError) as error:
        load_model(f"hf:{tmp_path}")
    message = str(error.value)
    assert str(tmp_path) in message and "vit_mae" in message and "ViTMAEModel" in message
    assert "closest supported: 'vit'" in message
