"""Small local stand-in tokenizers, for coverage builds of models whose real tokenizer would be downloaded.

SigLIP's sentencepiece, XLM-R's and mT5's tokenizers live on the Hugging Face hub; a model built with random
weights for the coverage matrix (or a test) gets a byte-level tokenizer with the same special tokens at the same
ids instead, saved where the model's loader looks for it. Every UTF-8 byte is a token, so any language tokenizes.
The real loading path (the hub tokenizer) stays what users run.
"""
from __future__ import annotations

from pathlib import Path

# special tokens (in id order) and where the tokenizer puts them around a text, per tokenizer family
SPECIALS = {
    "xlm-roberta": (["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>"),         # <s>=0 <pad>=1 </s>=2
    "t5": (["<pad>", "</s>", "<unk>"], "$A </s>"),                              # mT5 / SigLIP: <pad>=0 </s>=1
    "gemma": (["<pad>", "<eos>", "<bos>", "<unk>"], "<bos> $A <eos>"),          # SigLIP 2: <pad>=0 <eos>=1 <bos>=2
}


def byte_tokenizer(path: Path, family: str = "xlm-roberta") -> int:
    """Write a byte-level BPE tokenizer (no merges) with ``family``'s special tokens to ``path``; its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials, template = SPECIALS[family]
    vocab = {token: i for i, token in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=specials[-1]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    used = [t for t in specials if t in template]
    tokenizer.post_processor = processors.TemplateProcessing(single=template,
                                                             special_tokens=[(t, vocab[t]) for t in used])
    pad = next(t for t in specials if "pad" in t)
    eos = next(t for t in specials if t in ("</s>", "<eos>"))
    bos = next((t for t in specials if t in ("<s>", "<bos>")), None)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad, eos_token=eos, bos_token=bos,
                                   unk_token=specials[-1])
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(path)
    return len(vocab)
