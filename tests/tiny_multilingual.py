"""A tiny open_clip CLIP whose text tower is a Hugging Face XLM-RoBERTa, as open_clip's multilingual models are.

It is written in open_clip's ``local-dir`` format, with the text tower's config and a byte-level stand-in tokenizer
(``models.backends.stand_in``: every UTF-8 byte is a token, so any language tokenizes) beside it, and is loaded back
through ``load_model``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CONTEXT_LENGTH = 24


def open_clip_xlm_roberta(path: Path) -> Path:
    """open_clip ``local-dir`` CustomTextCLIP: ViT image tower + tiny XLM-RoBERTa text tower (mean pooled)."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    from models.backends.stand_in import byte_tokenizer

    torch.manual_seed(0)
    text_dir = path / "text"  # the text tower's config; the tokenizer sits in the model folder, where open_clip looks
    text_dir.mkdir(parents=True, exist_ok=True)
    byte_tokenizer(path, "xlm-roberta")  # <s>=0, <pad>=1, </s>=2, <unk>=3, then the 256 bytes
    XLMRobertaConfig(vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=CONTEXT_LENGTH + 4, pad_token_id=1,
                     bos_token_id=0, eos_token_id=2).save_pretrained(text_dir)
    text_cfg = {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(path), "hf_pooler_type": "mean_pooler",
                "hf_proj_type": "linear", "hf_model_pretrained": False, "context_length": CONTEXT_LENGTH}
    model_cfg = {"embed_dim": 32,
                 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
                 "text_cfg": text_cfg}
    model = open_clip.model.CustomTextCLIP(**model_cfg)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"size": 32}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "open_clip_model.safetensors")
    return path
