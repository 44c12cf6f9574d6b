"""``Chat``: a multi-turn, multi-image conversation with a ``mini_gpt4`` model (docs/recipe.md §4)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from xraygpt.common.constants import IMAGE_PLACEHOLDER
from xraygpt.common.errors import MissingFileError, UsageError, XrayGPTError
from xraygpt.common.generation import CHAT_GENERATION
from xraygpt.conversation.templates import IMAGE_MESSAGE, Conversation, get_conv_template

log = logging.getLogger(__name__)


class ContextTooLongError(XrayGPTError, ValueError):
    """Even the newest turn (with the room for the answer) does not fit in ``max_length``."""


class Chat:
    """Holds the model side of a chat; the caller keeps ``conv`` and ``img_list`` per user.

    Usage::

        chat = Chat(model, vis_processor)           # model: MiniGPT4, already on its device
        conv, img_list = chat.new_conversation(), []
        chat.upload_img("scan.png", conv, img_list)  # PIL image, path or tensor -> "Received."
        chat.ask("What are the findings?", conv)
        text, ids = chat.answer(conv, img_list, do_sample=False)
        for partial in chat.stream_answer(conv, img_list):   # after another ask()
            ...                                              # the growing answer text

    Methods:

    - ``upload_img(image, conv, img_list) -> str``: ``image`` is a PIL image, a
      path, or a tensor ``[3, H, W]`` / ``[1, 3, H, W]`` already processed.
      PIL images and paths go through ``vis_processor``. Appends the image's
      embeddings to ``img_list`` and the Patient message
      ``<Img><ImageHere></Img>`` to ``conv``.
    - ``ask(text, conv)``: a Patient message; right after an image it joins
      that image's message (with a space), as in the original.
    - ``answer(conv, img_list, **gen) -> (text, token_ids)``: generates the
      Doctor's reply, stores it in ``conv`` and returns it with the new token
      ids (a 1-D LongTensor on the CPU).
    - ``stream_answer(conv, img_list, **gen) -> Iterator[str]``: the same, but
      yields the answer text as it grows; ``conv`` holds the final text when
      the iterator ends (or is closed early). Beam search cannot stream, so
      with ``num_beams > 1`` it yields the finished answer once.

    ``gen`` options: ``max_new_tokens`` (300), ``num_beams`` (1),
    ``min_new_tokens`` (1), ``top_p`` (0.9), ``repetition_penalty`` (1.0),
    ``length_penalty`` (1.0), ``temperature`` (1.0), ``do_sample`` (True),
    ``max_length`` (the context limit, default ``self.max_length`` = 2000: the
    context is cut from the left so that context + ``max_new_tokens`` fits).
    Generation stops at the template's separator ``###``. When older turns
    must go to make room, they are cut from the left (with a warning); when
    even the newest Patient turn does not fit, ``ContextTooLongError`` is
    raised and ``conv`` is left as it was.

    ``device``: where images and the context are put (default: the model's
    device; the model itself must already be there).
    """

    def __init__(
        self,
        model: Any,
        vis_processor: Callable[[Any], torch.Tensor] | None = None,
        *,
        device: str | torch.device | None = None,
        conv_template: str = "xraygpt",
        max_length: int = 2000,
    ) -> None:
        self.model = model
        self.vis_processor = vis_processor
        self.device = torch.device(device) if device is not None else None
        self.conv_template = conv_template
        self.max_length = max_length
        get_conv_template(conv_template)  # fail now on an unknown name

    def new_conversation(self) -> Conversation:
        return get_conv_template(self.conv_template)

    # ----------------------------------------------------------------- input

    def _image_tensor(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            tensor = image
        else:
            if isinstance(image, str | Path):
                # The one reader: PNG, JPEG and DICOM (windowed), 16-bit rescaled.
                from xraygpt.processors.image_io import load_image

                path = Path(image)
                if not path.is_file():
                    raise MissingFileError(f"image file not found: {path}")
                image = load_image(path)
            if self.vis_processor is None:
                raise ValueError(
                    "Chat got a PIL image or a path but has no vis_processor; pass one "
                    "(e.g. the blip2_image_eval processor) or upload a processed tensor"
                )
            tensor = self.vis_processor(image.convert("RGB"))
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
            raise ValueError(
                f"expected one image [3, H, W], got a tensor of shape {tuple(tensor.shape)}"
            )
        return tensor

    @torch.no_grad()
    def upload_img(self, image: Any, conv: Conversation, img_list: list[torch.Tensor]) -> str:
        device = self.device or self.model.device
        embeds, _ = self.model.encode_img(self._image_tensor(image).to(device))
        img_list.append(embeds)
        conv.append_message(conv.roles[0], IMAGE_MESSAGE)
        return "Received."

    def ask(self, text: str, conv: Conversation) -> None:
        # The placeholder marks where image embeddings go: typed by a user it would
        # ask for an image that was never uploaded and break the conversation.
        text = text.replace(IMAGE_PLACEHOLDER, "")
        last = conv.messages[-1] if conv.messages else None
        if last is not None and last[0] == conv.roles[0] and (last[1] or "").endswith("</Img>"):
            last[1] = f"{last[1]} {text}"
        else:
            conv.append_message(conv.roles[0], text)

    # ---------------------------------------------------------------- output

    @torch.no_grad()
    def get_context_emb(self, conv: Conversation, img_list: list[torch.Tensor]) -> torch.Tensor:
        """The prompt's embeddings [1, L, H]: text segments with the images between them."""
        segments = conv.get_prompt().split(IMAGE_PLACEHOLDER)
        if len(segments) != len(img_list) + 1:
            raise ValueError(
                f"the conversation has {len(segments) - 1} image placeholder(s) but "
                f"{len(img_list)} image(s) were uploaded"
            )
        model = self.model
        pieces = []
        for i, segment in enumerate(segments):
            ids = model.tokenize(segment)
            if i == 0:  # only the very start of the context gets bos
                ids = torch.cat([model.bos_ids(), ids])
            pieces.append(model.embed_tokens(ids))
            if i < len(img_list):
                pieces.append(img_list[i][0].to(model.device, pieces[-1].dtype))
        return torch.cat(pieces).unsqueeze(0)

    def image_cut_off(
        self, conv: Conversation, img_list: list[torch.Tensor], max_new_tokens: int
    ) -> tuple[int, int] | None:
        """``(positions needed, max_length)`` if answering ``conv`` now would cut into its image.

        A context that is too long loses its oldest positions (see :meth:`answer`).
        Losing the system text is harmless; once the cut reaches the first image's
        embeddings, the model would answer without seeing the X-ray. ``None``
        when the answer (``max_new_tokens`` of room) keeps the image whole.
        """
        probe = conv.copy()
        probe.append_message(probe.roles[1], None)  # the open answer turn, as answering adds
        needed = self.get_context_emb(probe, img_list).shape[1] + max_new_tokens
        before_image = probe.get_prompt().split(IMAGE_PLACEHOLDER, 1)[0]
        room = len(self.model.bos_ids()) + len(self.model.tokenize(before_image))
        if needed - self.max_length > room:
            return needed, self.max_length
        return None

    def _newest_turn_length(self, conv: Conversation, img_list: list[torch.Tensor]) -> int:
        """Positions taken by the last Patient message and the open Doctor turn."""
        last_user = max(i for i, (role, _) in enumerate(conv.messages) if role == conv.roles[0])
        tail = conv.copy()
        tail.system, tail.messages = "", conv.messages[last_user:]
        text = tail.get_prompt()[len(tail.sep) :]
        n_images = text.count(IMAGE_PLACEHOLDER)
        n_tokens = sum(len(self.model.tokenize(s)) for s in text.split(IMAGE_PLACEHOLDER))
        per_image = img_list[-1].shape[1] if img_list else 0
        return n_tokens + n_images * per_image

    def _prepare(self, conv: Conversation, img_list: list[torch.Tensor], gen: dict[str, Any]):
        gen = dict(gen)
        max_length = int(gen.pop("max_length", None) or self.max_length)
        options = CHAT_GENERATION.updated(**gen).as_kwargs()
        if options["max_new_tokens"] >= max_length:
            raise UsageError(
                f"max_new_tokens={options['max_new_tokens']} leaves no room for the context "
                f"in max_length={max_length}: ask for fewer new tokens"
            )
        if not conv.messages or conv.messages[-1][0] != conv.roles[0]:
            raise ValueError("nothing to answer: ask() a question (or upload an image) first")
        conv.append_message(conv.roles[1], None)
        try:
            embeds = self.get_context_emb(conv, img_list)
            newest = self._newest_turn_length(conv, img_list)
            if newest + options["max_new_tokens"] > max_length:
                raise ContextTooLongError(
                    f"the newest turn takes {newest} positions; with max_new_tokens="
                    f"{options['max_new_tokens']} it does not fit in max_length={max_length}"
                )
        except Exception:
            conv.messages.pop()  # leave the conversation as it was
            raise
        overflow = embeds.shape[1] + options["max_new_tokens"] - max_length
        if overflow > 0:
            log.warning(
                "conversation longer than max_length=%d: dropping its first %d positions",
                max_length,
                overflow,
            )
            embeds = embeds[:, overflow:]
        return embeds, options

    def _clean(self, text: str, sep: str, role: str) -> str:
        # An answer holding the image placeholder (a weak model can write it) would
        # break every later turn of the conversation, as in :meth:`ask`.
        text = text.split(sep, 1)[0].split(f"{role}:")[-1]
        return text.replace(IMAGE_PLACEHOLDER, "").strip()

    def answer(
        self, conv: Conversation, img_list: list[torch.Tensor], **gen: Any
    ) -> tuple[str, torch.Tensor]:
        embeds, options = self._prepare(conv, img_list, gen)
        ids = self.model.generate_from_embeds(embeds, end_sym=conv.sep, **options)[0]
        raw = self.model.llama_tokenizer.decode(ids, skip_special_tokens=True)
        text = self._clean(raw, conv.sep, conv.roles[1])
        conv.messages[-1][1] = text
        return text, ids.cpu()

    def stream_answer(
        self, conv: Conversation, img_list: list[torch.Tensor], **gen: Any
    ) -> Iterator[str]:
        embeds, options = self._prepare(conv, img_list, gen)
        text = ""
        try:
            if options["num_beams"] > 1:
                ids = self.model.generate_from_embeds(embeds, end_sym=conv.sep, **options)[0]
                raw = self.model.llama_tokenizer.decode(ids, skip_special_tokens=True)
                text = self._clean(raw, conv.sep, conv.roles[1])
                yield text
                return
            for partial in self.model.stream_from_embeds(embeds, end_sym=conv.sep, **options):
                text = self._clean(partial, conv.sep, conv.roles[1])
                yield text
        finally:
            conv.messages[-1][1] = text
