"""The tokenizer of the ``tiny-*`` test models: a byte-level BPE trained on a small deterministic corpus, with a
ChatML template (the models themselves are built by ``distill.models.build_tiny``)."""

from __future__ import annotations

import random

# ChatML, as SmolLM2-Instruct and Qwen2 use; the tiny tokenizer gets it so chat-template paths are exercised.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_corpus(seed: int = 0) -> list[str]:
    """A deterministic mixed corpus (English templates, arithmetic, Python) for the tiny BPE tokenizer."""
    rng = random.Random(seed)
    nouns = [
        "cat",
        "dog",
        "model",
        "teacher",
        "student",
        "river",
        "city",
        "number",
        "list",
        "function",
        "answer",
        "question",
        "word",
        "tree",
    ]
    verbs = ["sees", "writes", "learns", "counts", "returns", "explains", "sorts", "reads", "finds", "adds", "makes"]
    adjs = ["small", "large", "quick", "careful", "bright", "simple", "prime", "even", "odd", "first", "last"]
    texts = []
    for _ in range(400):
        texts.append(
            f"The {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(adjs)} {rng.choice(nouns)}."
        )
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        texts.append(f"What is {a} + {b}? The answer is {a + b}. {a} * 2 = {a * 2}.")
        name = rng.choice(["add", "count", "reverse", "is_prime", "square", "join_words"])
        texts.append(f"def {name}(x, y=None):\n    # {rng.choice(verbs)} x\n    return x + {rng.randint(0, 9)}\n")
    texts.append("The capital of France is Paris. The capital of Italy is Rome. Hello, how are you?")
    return texts


def train_tiny_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(tiny_corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok
