"""Models of the controlled world: a character tokenizer made for the world's tasks and small Llama models.

The world's tasks (``tasks/world_*.py``) use printable ASCII only, so the tokenizer has one token per character:
five specials (``<pad>``, ``<bos>``, ``<eos>``, ``<|user|>``, ``<|assistant|>``) and the 95 characters
``chr(32)..chr(126)``, 100 ids in all. It is a ``tokenizers`` BPE with no merges wrapped as a
``PreTrainedTokenizerFast``, with a chat template ``<bos><|user|>PROMPT<|assistant|>RESPONSE<eos>``: every code path
(chat rendering, lm-eval, generation, the trainer) treats it like any hub tokenizer.

A source name ``world-h<hidden>-l<layers>-f<ffn>[-s<seed>]`` is a randomly initialised ``LlamaForCausalLM`` of that
shape with this tokenizer, built once with a fixed seed and saved with ``save_pretrained`` under
``<cache>/world/<name>``; it is loaded back by path like any other model. The world's teacher is such a model
trained in-process by the suite's ``teacher`` stage; the student is a smaller one.
"""

from __future__ import annotations

import re

import torch

from distill.config import require

SPECIALS = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>"]
CHARS = [chr(c) for c in range(32, 127)]
WORLD_RE = re.compile(r"^world-h(\d+)-l(\d+)-f(\d+)(?:-s(\d+))?$")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('the world tokenizer has user and assistant roles only') }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def world_tokenizer():
    """The character tokenizer (100 ids; deterministic, nothing is trained)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        additional_special_tokens=SPECIALS[3:],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def parse_world_name(name: str) -> dict[str, int]:
    m = WORLD_RE.match(name)
    if not m:
        raise ValueError(f"bad world model name {name!r}; expected world-h<hidden>-l<layers>-f<ffn>[-s<seed>]")
    h, layers, ffn, seed = (int(g) if g is not None else 0 for g in m.groups())
    require(h % 32 == 0 and h >= 32, f"world model hidden size must be a multiple of 32, got {h}")
    require(layers >= 1 and ffn >= 1, f"world model needs >= 1 layer and ffn >= 1, got {name!r}")
    return {"h": h, "l": layers, "f": ffn, "seed": seed}


def world_config(name: str):
    from transformers import LlamaConfig

    spec = parse_world_name(name)
    n = len(SPECIALS) + len(CHARS)
    heads = spec["h"] // 32
    return LlamaConfig(
        vocab_size=n,
        hidden_size=spec["h"],
        intermediate_size=spec["f"],
        num_hidden_layers=spec["l"],
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the (tied) token embedding and head: the size the world's ratios are stated in."""
    emb = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in emb)
