"""Vision-language models: LLaVA-style teachers and students, their image processor, and image rows.

A VLM loads through ``from_pretrained`` like any model, with its processor (``AutoProcessor``): a hub id such as
``llava-hf/llava-1.5-7b-hf`` or ``bczhou/tiny-llava-v1-hf``, a local directory, or the in-process tiny model
``vlm-h<hidden>-l<layers>-f<ffn>[-v<vision hidden, 64>][-s<seed>]``: a LLaVA (``LlavaForConditionalGeneration``)
whose vision tower is a 2-layer CLIP encoder on 32 × 32 images (patch 16, one per grid cell of the scenes: 4 image
tokens), a 2-layer MLP projector, and a world Llama
(``distill/world_model.py``) of that shape, with the world's character tokenizer plus ``<image>``. It is built once
with a fixed seed and saved with its processor like the other tiny models.

The tokenizer a VLM loads with carries its :class:`ImageInputs` (``images_of(tok)``): the image processor, the
image token and how many copies of it one image takes. Everything else treats it as a plain tokenizer.

**Image rows.** A data row may name an ``image`` (a path, relative to its JSONL file). Its prompt gets the
``<image>`` placeholder (at the start of the first user turn when the prompt has none), expanded to the image's
token count, and its token ids travel as :class:`PromptIds`, a list that remembers its image, so every sampler,
the teacher's responses and the student's on-policy generation stay conditioned on it. :func:`distill.data.collate`
adds the batch's ``pixel_values``; teacher and student see the same ones, so they must share the image processor
(:func:`check_same_processor`). Pixel values are computed from the file on first use and kept (a 32 × 32 image is
12 KB; a 336 × 336 LLaVA image 1.3 MB, so a large real set keeps the most recent :data:`PIXEL_CACHE`).
"""

from __future__ import annotations

import functools
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IMAGE_TOKEN = "<image>"
VLM_RE = re.compile(r"^vlm-h(\d+)-l(\d+)-f(\d+)(?:-v(\d+))?(?:-s(\d+))?$")
IMAGE_SIZE, PATCH = 32, 16
PIXEL_CACHE = 8192


class PromptIds(list):
    """A prompt's token ids and the image it is conditioned on (None: a text prompt)."""

    def __init__(self, ids, image: str | None = None):
        super().__init__(ids)
        self.image = image


def image_of(prompt_ids: Any) -> str | None:
    return getattr(prompt_ids, "image", None)


@dataclass(frozen=True)
class ImageInputs:
    """What a VLM's tokenizer needs to encode image rows: its image processor and the image token's expansion."""

    processor: Any  # the image processor (e.g. CLIPImageProcessor)
    image_token_id: int
    tokens_per_image: int
    whole: Any = None  # the model's processor (tokenizer + image processor), saved with the model

    @functools.cached_property
    def signature(self) -> str:
        """The processor's settings: two models may share image rows only if theirs are equal (computed once)."""
        cfg = self.processor.to_dict()
        cfg.pop("processor_class", None)
        cfg.pop("image_processor_type", None)
        return json.dumps({**cfg, "tokens": self.tokens_per_image}, sort_keys=True, default=str)


def image_rows_unsupported(teacher_cache: bool, gen_backend: str, prompts: list) -> str | None:
    """Why this training run cannot take its image rows (None: it can)."""
    if not any(image_of(p) for p in prompts):
        return None
    if teacher_cache:  # its keys are token ids, blind to the image
        return "teacher_cache.enabled: the teacher cache does not support image rows; disable it"
    if gen_backend == "vllm":
        return "gen_backend=vllm: the vLLM engine does not pass images yet; use gen_backend=hf for image rows"
    return None


def images_of(tok) -> ImageInputs | None:
    return getattr(tok, "distill_images", None)


def save_tokenizer(tok, path) -> None:
    """``tok.save_pretrained(path)``; a VLM's tokenizer saves its whole processor, so the copy loads as a VLM."""
    inputs = images_of(tok)
    (inputs.whole if inputs is not None and inputs.whole is not None else tok).save_pretrained(path)


def processor_mismatch(teacher_tok, student_tok) -> str | None:
    """Why teacher and student cannot share image rows (None: they can); both see the same pixel values."""
    t, s = images_of(teacher_tok), images_of(student_tok)
    if (t is None) != (s is None):
        return (
            f"only the {'teacher' if t is not None else 'student'} is a vision-language model; both must see the image"
        )
    if t is not None and s is not None and t.signature != s.signature:
        return (
            "teacher and student image processors differ (size, normalisation or image tokens); a VLM pair must "
            "share one processor"
        )
    return None


_PIXELS: OrderedDict[str, torch.Tensor] = OrderedDict()
_PROCESSORS: dict[str, ImageInputs] = {}


def register_image(path: str, inputs: ImageInputs) -> None:
    """Remember which processor turns ``path`` into pixel values (computed on first use by :func:`pixels`)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    old = _PROCESSORS.get(path)
    if old is not None and old is not inputs and old.signature != inputs.signature:
        _PIXELS.pop(path, None)  # another processor's pixels of this file: never served to this one
    _PROCESSORS[path] = inputs


def pixels(path: str) -> torch.Tensor:
    """``[3, H, W]`` float32 pixel values of a registered image."""
    if path in _PIXELS:
        _PIXELS.move_to_end(path)
        return _PIXELS[path]
    from PIL import Image

    inputs = _PROCESSORS.get(path)
    if inputs is None:
        raise KeyError(f"image {path} was never encoded with a VLM tokenizer")
    with Image.open(path) as img:
        value = inputs.processor(images=img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    _PIXELS[path] = value
    if len(_PIXELS) > PIXEL_CACHE:
        _PIXELS.popitem(last=False)
    return value


def batch_pixels(images: list[str | None]) -> torch.Tensor | None:
    """The batch's ``pixel_values`` (None for text rows); a batch mixing image and text rows is refused."""
    if all(i is None for i in images):
        return None
    if any(i is None for i in images):
        raise ValueError("a batch mixes image rows and text rows; every row of an image data set needs an image")
    return torch.stack([pixels(i) for i in images])  # type: ignore[arg-type]


def expand_image_tokens(ids: list[int], inputs: ImageInputs) -> list[int]:
    """Each ``<image>`` placeholder as ``tokens_per_image`` copies (the layout LLaVA's forward expects)."""
    if ids.count(inputs.image_token_id) != 1:
        raise ValueError(
            f"an image row's prompt must hold exactly one {IMAGE_TOKEN}, found {ids.count(inputs.image_token_id)}"
        )
    i = ids.index(inputs.image_token_id)
    return ids[:i] + [inputs.image_token_id] * inputs.tokens_per_image + ids[i + 1 :]


def with_placeholder(prompt):
    """The prompt with ``<image>`` at the start of its first user turn, unless it has one already."""
    if isinstance(prompt, str):
        return prompt if IMAGE_TOKEN in prompt else f"{IMAGE_TOKEN} {prompt}"
    if any(IMAGE_TOKEN in m.get("content", "") for m in prompt):
        return prompt
    out, done = [], False
    for m in prompt:
        if not done and m.get("role") == "user":
            m, done = {**m, "content": f"{IMAGE_TOKEN} {m['content']}"}, True
        out.append(m)
    return out


# --------------------------------------------------------------------------------------------- models


def is_vlm(src: str) -> bool:
    """Whether ``src`` (a local directory or a hub id) is a vision-language model: its config has a vision part."""
    cfg = Path(src) / "config.json"
    if cfg.is_file():
        return "vision_config" in json.loads(cfg.read_text())
    if Path(src).exists():
        return False
    from transformers import AutoConfig

    try:
        return hasattr(AutoConfig.from_pretrained(src), "vision_config")
    except (OSError, ValueError):  # not reachable here: the model load that follows says why, in one line
        return False


def vlm_tokenizer():
    from distill.world_model import world_tokenizer

    tok = world_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tok


def build_vlm(name: str, cache_root: Path) -> Path:
    """Build (once) and save the tiny LLaVA ``name`` with its processor under ``cache_root/vlm``; return its
    directory."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from distill.atomic import atomic_dir

    m = VLM_RE.match(name)
    if not m:
        raise ValueError(
            f"bad VLM name {name!r}; expected vlm-h<hidden>-l<layers>-f<ffn>[-v<vision hidden>][-s<seed>]"
        )
    h, layers, ffn = int(m.group(1)), int(m.group(2)), int(m.group(3))
    vh, seed = int(m.group(4) or 64), int(m.group(5) or 0)
    dest = Path(cache_root) / "vlm" / name
    if (dest / "model.safetensors").is_file() and (dest / "processor_config.json").is_file():
        return dest
    tok = vlm_tokenizer()
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    n_image = (IMAGE_SIZE // PATCH) ** 2
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=2 * vh, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=vh)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=max(1, h // 16), num_key_value_heads=max(1, h // 32),
                       max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id, image_seq_length=n_image,
                      vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=True)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg)
        # LLaVA's projector starts from a pretrained CLIP; from scratch, its two small default-initialised layers
        # pass almost none of the image's variation on (a 0.03 gain: features nearly equal across images), and the
        # model learns the text prior only. Unit-gain init (std 1/sqrt(fan_in)) lets the image through from step 0.
        for layer in (model.model.multi_modal_projector.linear_1, model.model.multi_modal_projector.linear_2):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5)
            torch.nn.init.zeros_(layer.bias)
    for which in ("eos", "pad", "bos"):
        setattr(model.generation_config, f"{which}_token_id", getattr(tok, f"{which}_token_id"))
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=size)
    processor = LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tok.chat_template)  # fmt: skip
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return dest


def load_vlm(src: str, dtype: torch.dtype):
    """``(model, tokenizer)`` of a VLM directory or hub id; the tokenizer carries its :class:`ImageInputs`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(src)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=dtype)
    tok = processor.tokenizer
    image_id = getattr(model.config, "image_token_id", None) or getattr(model.config, "image_token_index", None)
    n = getattr(model.config, "image_seq_length", None) or getattr(processor, "num_image_tokens", None)
    if image_id is None or n is None:
        raise ValueError(f"VLM {src}: its config names no image token or image token count")
    tok.distill_images = ImageInputs(processor.image_processor, int(image_id), int(n), processor)
    return model, tok


def vlm_non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the token embeddings and the head (vision tower and projector included)."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)
