"""The XrayGPT chat demo (Gradio 6).

:func:`build_demo` wraps any ``Chat`` (see :mod:`xraygpt.conversation`) in a
web app: upload a chest X-ray, ask, watch the answer stream in, ask
follow-ups, reset. :func:`main` loads the model named by a config and serves
the app; nothing is loaded at import time.

Every bad input (a question before any image, an empty question, a file that
is not an image, a corrupt, 16-bit or huge image, a conversation longer than
the model's context) is answered by a message in the chat, and the app keeps
serving. Each browser session has its own conversation; one queue bounds how
many generations run at once.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from xraygpt.apps.demo.examples import EXAMPLE_QUESTIONS, write_example_xrays
from xraygpt.apps.demo.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    file_digest,
    read_upload,
)
from xraygpt.apps.demo.options import DEFAULT_MAX_NEW_TOKENS, MIB, resolve_device
from xraygpt.common.errors import UsageError
from xraygpt.processors.dicom import DICOM_SUFFIXES, looks_like_dicom

log = logging.getLogger(__name__)

DEFAULT_MAX_QUESTION_CHARS = 2000
BEAMS_RANGE = (1, 10)
TEMPERATURE_RANGE = (0.1, 2.0)

TITLE = "XrayGPT"
DESCRIPTION = (
    "Chest radiograph summarisation and questions. Upload a frontal chest X-ray "
    "(or pick an example), then ask about it; follow-up questions keep the context."
)
DISCLAIMER = (
    "**Research use only.** XrayGPT is a research prototype, not a medical device. "
    "Its answers can be wrong, incomplete or invented, and must not be used to "
    "diagnose, treat or make any decision about a patient. Do not upload images "
    "that identify a person."
)

# Messages shown in the chat. Tests match on these, so they live in one place.
MSG_NO_IMAGE = "Please upload a chest X-ray first (left panel), then ask your question."
MSG_EMPTY_QUESTION = "Please type a question about the X-ray."
MSG_QUESTION_TOO_LONG = (
    "Your question is {n:,} characters long; the limit is {limit:,}. Please shorten it."
)
MSG_IMAGE_LOADED = "X-ray {name!r} loaded ({width} × {height} pixels). Ask me about it."
MSG_DICOM_LOADED = (
    "DICOM X-ray {name!r} loaded ({width} × {height} pixels after windowing; view position: "
    "{view}). Ask me about it."
)
MSG_CONTEXT_FULL = (
    "This conversation has grown too long for the model's context: with room for the "
    "answer it needs {needed:,} of {limit:,} positions, and answering now would push the "
    "X-ray out of what the model sees. Clear the chat (bin icon) to start again about "
    "the same X-ray, or press **Reset**."
)
MSG_FIRST_QUESTION_TOO_LONG = (
    "Your question is too long for the model's context: with the X-ray and room for the "
    "answer it needs {needed:,} of {limit:,} positions, so the model would not see the "
    "X-ray. Please shorten it."
)
MSG_BAD_SETTING = "{name} must be between {low} and {high}; got {value!r}."
MSG_EMPTY_ANSWER = "(The model returned an empty answer. Try again, or raise the temperature.)"
MSG_MODEL_ERROR = (
    "Something went wrong while {doing} ({kind}). The app is still running: "
    "try again, or press **Reset**."
)
WARNING_PREFIX = "⚠️ "
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SESSION_TTL_S = 3 * 3600
SHOWN_DICOM_TTL_S = 60


@dataclass
class ChatSession:
    """One browser session's conversation with the model (kept in ``gr.State``)."""

    conv: Any = None  # the model-side conversation; None until an X-ray is loaded
    img_list: list = field(default_factory=list)  # image embeddings, as Chat keeps them
    image_key: str | None = None  # SHA-256 of the X-ray the conversation is about
    history: list[dict[str, str]] = field(default_factory=list)  # what the chatbot shows
    # The state right after the X-ray was loaded, to restart without re-encoding it.
    start_conv: Any = None
    start_history: list[dict[str, str]] = field(default_factory=list)
    # For a DICOM: SHA-256 of the windowed PNG the image box shows instead of the file.
    shown_key: str | None = None
    shown_path: Path | None = None


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _warning(text: str) -> dict[str, str]:
    return _bot(WARNING_PREFIX + text)


def _forget_upload(path: Path) -> None:
    """Delete an uploaded DICOM from Gradio's upload cache once it has been decoded.

    Its header can name the patient; what the app keeps is the windowed pixels.
    Files given by path from elsewhere (API callers on this machine, tests) are
    not Gradio's copies and are left alone.
    """
    from gradio.utils import get_upload_folder

    cache = Path(get_upload_folder()).resolve()
    try:
        resolved = path.resolve()
    except OSError:
        return
    if cache in resolved.parents:
        resolved.unlink(missing_ok=True)


def _upload_path(image: Any) -> tuple[Path, str] | None:
    """The server path and the user's file name of an image input, in any of its shapes.

    Handlers receive the image unprocessed (a FileData dict), so that the app,
    not Gradio's decoder, decides what a bad file means; API callers and
    tests may pass a plain path.
    """
    if image is None:
        return None
    if isinstance(image, str | Path):
        return Path(image), Path(image).name
    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
    if not path:
        return None
    name = image.get("orig_name") if isinstance(image, dict) else getattr(image, "orig_name", None)
    return Path(path), name or Path(path).name


class ChatHandlers:
    """What the app's events do, separate from the layout so it can be tested directly."""

    def __init__(
        self,
        chat: Any,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS,
        max_file_bytes: int | None = DEFAULT_MAX_BYTES,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if max_new_tokens >= chat.max_length:
            raise UsageError(
                f"max_new_tokens={max_new_tokens} leaves no room for the conversation in the "
                f"model's context of {chat.max_length} positions; use fewer new tokens"
            )
        self.chat = chat
        self.max_new_tokens = max_new_tokens
        self.max_question_chars = max_question_chars
        self.max_file_bytes = max_file_bytes
        self.max_image_pixels = max_image_pixels
        self._shown_dir: Path | None = None

    # ------------------------------------------------------------------ images

    def _show_dicom(self, image: Any) -> tuple[Path, str]:
        """Write the windowed DICOM as a PNG for the image box; returns its path and digest.

        The PNG holds pixels only (no header). Gradio copies it into its cache when
        it is shown; the copy here lives in a folder removed at exit, and is deleted
        by a later upload once it is a minute old (by then Gradio has its copy).
        """
        if self._shown_dir is None:
            self._shown_dir = Path(tempfile.mkdtemp(prefix="xraygpt-demo-dicom-"))
            atexit.register(shutil.rmtree, self._shown_dir, ignore_errors=True)
        now = time.time()
        for old in self._shown_dir.glob("*.png"):
            try:
                if now - old.stat().st_mtime > SHOWN_DICOM_TTL_S:
                    old.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        handle, name = tempfile.mkstemp(suffix=".png", dir=self._shown_dir)
        with open(handle, "wb") as out:
            image.convert("L").save(out, format="PNG")  # gray: a third of the bytes
        return Path(name), file_digest(name)

    def _start(self, path: Path, name: str, key: str) -> ChatSession:
        """A new conversation about the X-ray at ``path`` (raises ImageRejected)."""
        upload = read_upload(
            path, name=name, max_bytes=self.max_file_bytes, max_pixels=self.max_image_pixels
        )
        image = upload.image
        conv = self.chat.new_conversation()
        img_list: list = []
        self.chat.upload_img(image, conv, img_list)
        # Sessions can sit idle for hours: keep their image embeddings in host memory,
        # not on the accelerator (Chat moves them back to the model's device per turn).
        img_list = [e.cpu() if isinstance(e, torch.Tensor) else e for e in img_list]
        size = {"name": name, "width": image.width, "height": image.height}
        if upload.dicom:
            notice = [
                _bot(MSG_DICOM_LOADED.format(**size, view=upload.view_position or "not given"))
            ]
            shown_path, shown_key = self._show_dicom(image)
        else:
            notice = [_bot(MSG_IMAGE_LOADED.format(**size))]
            shown_path, shown_key = None, None
        return ChatSession(
            conv=conv,
            img_list=img_list,
            image_key=key,
            history=list(notice),
            start_conv=copy.deepcopy(conv),
            start_history=notice,
            shown_key=shown_key,
            shown_path=shown_path,
        )

    def _session_for(self, image: Any, session: ChatSession) -> tuple[ChatSession, str | None]:
        """The session to continue for ``image``, and a warning if the image is unusable.

        The same file as before continues the conversation; a different one
        starts a new conversation. A rejected file leaves no image loaded, so
        the user cannot end up asking about an X-ray they no longer see.
        """
        upload = _upload_path(image)
        if upload is None:
            return session, None
        path, name = upload
        try:
            key = file_digest(path)
        except OSError:
            return ChatSession(), f"The upload of {name!r} did not arrive. Please upload it again."
        try:
            if key in (session.image_key, session.shown_key):
                return session, None
            return self._start(path, name, key), None
        except ImageRejected as err:
            return ChatSession(), str(err)
        except Exception as err:  # noqa: BLE001 - one failed upload must not stop the app
            log.exception("encoding the image %s failed", name)
            kind = type(err).__name__
            return ChatSession(), MSG_MODEL_ERROR.format(doing="reading the image", kind=kind)
        finally:
            # Used, repeated or refused: a DICOM's header can name the patient.
            if looks_like_dicom(path) or Path(name).suffix.lower() in DICOM_SUFFIXES:
                _forget_upload(path)

    def load_image(self, image: Any, session: ChatSession | None) -> tuple:
        """On upload: check and encode the X-ray; a new conversation starts.

        Returns (chat messages, image component value, session).
        """
        session = session if isinstance(session, ChatSession) else ChatSession()
        if _upload_path(image) is None:
            return [], None, ChatSession()
        session, problem = self._session_for(image, session)
        if problem is not None:
            # Clear the rejected file from the image box so what is shown is what is used.
            return [_warning(problem)], None, session
        if session.shown_path is not None and session.shown_path.is_file():
            # A DICOM: the box shows the windowed image, not the file the browser cannot draw.
            return list(session.history), str(session.shown_path), session
        return list(session.history), gr.skip(), session

    # ------------------------------------------------------------------ questions

    @staticmethod
    def _check_settings(num_beams: Any, temperature: Any) -> tuple[int, float] | str:
        """The sliders' values, or a message; API callers can send anything."""

        def number(value: Any, default: float) -> float:
            if value is None:
                return default
            if isinstance(value, bool):
                return float("nan")
            try:
                return float(value)
            except (TypeError, ValueError):
                return float("nan")

        beams = number(num_beams, 1)
        low, high = BEAMS_RANGE
        # NaN fails every comparison, so it lands here too.
        if not (low <= beams <= high and beams == int(beams)):
            return MSG_BAD_SETTING.format(name="Beams", low=low, high=high, value=num_beams)
        temp = number(temperature, 1.0)
        low_t, high_t = TEMPERATURE_RANGE
        if not low_t <= temp <= high_t:
            return MSG_BAD_SETTING.format(
                name="Temperature", low=low_t, high=high_t, value=temperature
            )
        return int(beams), temp

    def ask(
        self,
        image: Any,
        question: str | None,
        num_beams: Any,
        temperature: Any,
        session: ChatSession | None,
    ) -> Iterator[tuple]:
        """On send: stream the answer to ``question`` about the session's X-ray.

        Yields (chat messages, question box value, session). ``image`` is what
        the image box holds: an example the user clicked, or a file sent by an
        API caller that never called ``/upload``, is loaded here first.
        """
        session = session if isinstance(session, ChatSession) else ChatSession()
        text = (question or "").strip()
        session, problem = self._session_for(image, session)
        if problem is not None:
            session.history = [_warning(problem)]
            yield list(session.history), question, session
            return
        history = list(session.history)

        settings = self._check_settings(num_beams, temperature)
        if isinstance(settings, str):
            notice = settings
        elif session.conv is None:
            notice = MSG_NO_IMAGE
        elif not text:
            notice = MSG_EMPTY_QUESTION
        elif len(text) > self.max_question_chars:
            notice = MSG_QUESTION_TOO_LONG.format(n=len(text), limit=self.max_question_chars)
        else:
            notice = None
        if notice is not None:
            if text:
                shown = text if len(text) <= 500 else text[:500] + " …"
                history.append(_user(shown))
            history.append(_warning(notice))
            session.history = history
            # Keep the typed question, so it can be sent again once the problem is fixed.
            yield list(history), question, session
            return
        beams, temp = settings

        # Work on a copy: a turn that fails or is cancelled half-way (Reset,
        # closed tab) leaves the session's conversation as it was.
        conv = copy.deepcopy(session.conv)
        history.append(_user(text))
        yield list(history), "", session
        answer = ""
        try:
            self.chat.ask(text, conv)
            cut = self.chat.image_cut_off(conv, session.img_list, self.max_new_tokens)
            if cut is not None:
                needed, limit = cut
                # With no answer yet there is no conversation to clear: the question is it.
                first = not any(role == conv.roles[1] for role, _ in session.conv.messages)
                message = MSG_FIRST_QUESTION_TOO_LONG if first else MSG_CONTEXT_FULL
                history.append(_warning(message.format(needed=needed, limit=limit)))
                session.history = history
                # A refused first question goes back into the box, to be shortened.
                yield list(history), question if first else gr.skip(), session
                return
            stream = self.chat.stream_answer(
                conv,
                session.img_list,
                num_beams=beams,
                temperature=temp,
                max_new_tokens=self.max_new_tokens,
            )
            for answer in stream:
                yield [*history, _bot(answer)], gr.skip(), session
        except Exception as err:  # noqa: BLE001 - the app must keep serving other turns
            log.exception("generation failed")
            kind = type(err).__name__
            history.append(_warning(MSG_MODEL_ERROR.format(doing="answering", kind=kind)))
            session.history = history
            yield list(history), gr.skip(), session
            return
        history.append(_bot(answer.strip() or MSG_EMPTY_ANSWER))
        session.conv = conv
        session.history = history
        yield list(history), gr.skip(), session

    # ------------------------------------------------------------------ reset

    def reset(self) -> tuple:
        """Forget the image and the conversation: (image, chat, question, session)."""
        return None, [], "", ChatSession()

    def clear_image(self) -> tuple:
        """The user removed the X-ray: the conversation about it ends. (chat, session)."""
        return [], ChatSession()

    def restart(self, session: ChatSession | None) -> tuple:
        """The user cleared the chat: a new conversation about the same X-ray. (chat, session)."""
        if not isinstance(session, ChatSession) or session.start_conv is None:
            return [], ChatSession()
        restarted = ChatSession(
            conv=copy.deepcopy(session.start_conv),
            img_list=session.img_list,
            image_key=session.image_key,
            history=list(session.start_history),
            start_conv=session.start_conv,
            start_history=session.start_history,
        )
        return list(restarted.history), restarted


def _examples_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="xraygpt-demo-examples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def build_demo(
    chat: Any,
    *,
    model_note: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    concurrency_limit: int = 1,
    max_queue_size: int | None = 32,
    max_file_bytes: int | None = DEFAULT_MAX_BYTES,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_question_chars: int = DEFAULT_MAX_QUESTION_CHARS,
    examples: bool = True,
) -> gr.Blocks:
    """The chat app around ``chat`` (not launched; see :func:`launch_demo`).

    ``chat`` is a :class:`xraygpt.conversation.chat.Chat` (or offers the same
    ``new_conversation``, ``upload_img``, ``ask``, ``stream_answer``,
    ``get_context_emb``, ``max_length`` and ``model.tokenize`` / ``bos_ids``).
    ``concurrency_limit`` bounds the generations (and image encodings)
    running at once across all users; further requests wait in a queue of at
    most ``max_queue_size``.
    ``model_note`` is shown under the title (which model is answering).

    API endpoints (for ``gradio_client``): ``/upload`` (image or DICOM), ``/upload_dicom``
    (the DICOM button's), ``/ask`` (image, question, beams, temperature; streams),
    ``/reset``, ``/clear_image``, ``/restart`` (same X-ray, new conversation).
    """
    handlers = ChatHandlers(
        chat,
        max_new_tokens=max_new_tokens,
        max_question_chars=max_question_chars,
        max_file_bytes=max_file_bytes,
        max_image_pixels=max_image_pixels,
    )
    example_xrays = write_example_xrays(_examples_folder()) if examples else []

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        header = f"# {TITLE}\n{DESCRIPTION}"
        if model_note:
            header += f"\n\n*Model: {model_note}*"
        gr.Markdown(header)
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        # Gradio gives every browser session its own deep copy of this value, and
        # drops it once the session has been idle for SESSION_TTL_S.
        session = gr.State(ChatSession(), time_to_live=SESSION_TTL_S)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=280):
                image = gr.Image(
                    type="filepath",
                    label="Chest X-ray",
                    sources=["upload", "clipboard"],
                    height=340,
                    elem_id="xray-image",
                )
                # The image box's file picker offers images only: DICOMs come in here.
                dicom_upload = gr.UploadButton(
                    "Upload a DICOM (.dcm)",
                    file_types=[".dcm", ".dicom"],
                    file_count="single",
                    size="sm",
                    elem_id="dicom-upload",
                )
                reset = gr.Button("Reset", variant="secondary", elem_id="reset")
                with gr.Accordion("Generation settings", open=True):
                    beams = gr.Slider(
                        *BEAMS_RANGE,
                        value=1,
                        step=1,
                        label="Beams",
                        info="1 = fastest; more beams search longer for a likely answer",
                    )
                    temperature = gr.Slider(
                        *TEMPERATURE_RANGE,
                        value=1.0,
                        step=0.1,
                        label="Temperature",
                        info="lower = more conservative wording",
                    )
                if example_xrays:
                    shows = ", ".join(label for _, label in example_xrays)
                    gr.Examples(
                        examples=[[str(path)] for path, _ in example_xrays],
                        inputs=[image],
                        label=f"Example X-rays: synthetic phantoms, not patients ({shows})",
                        elem_id="xray-examples",
                    )
            with gr.Column(scale=3, min_width=360):
                chatbot = gr.Chatbot(
                    label="Conversation",
                    height=480,
                    elem_id="chatbot",
                    buttons=["copy", "copy_all"],
                    feedback_options=None,
                    placeholder="Upload a chest X-ray, then ask a question about it.",
                )
                with gr.Row():
                    question = gr.Textbox(
                        show_label=False,
                        placeholder="Ask about the X-ray, e.g. What are the findings?",
                        max_length=max_question_chars,
                        max_lines=6,
                        scale=5,
                        elem_id="question",
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                if examples:
                    gr.Examples(
                        examples=[[q] for q in EXAMPLE_QUESTIONS],
                        inputs=[question],
                        label="Example questions",
                        elem_id="question-examples",
                    )

        # Image encoding and generation share one concurrency group: together
        # they are what the accelerator runs, so together they are bounded.
        model_work = {"concurrency_id": "model", "concurrency_limit": concurrency_limit}
        upload_event = image.upload(
            handlers.load_image,
            inputs=[image, session],
            outputs=[chatbot, image, session],
            preprocess=False,  # the handler checks the file and explains what is wrong
            api_name="upload",
            show_progress="minimal",
            **model_work,
        )
        dicom_event = dicom_upload.upload(
            handlers.load_image,
            inputs=[dicom_upload, session],
            outputs=[chatbot, image, session],
            preprocess=False,
            api_name="upload_dicom",
            show_progress="minimal",
            **model_work,
        )
        ask_event = gr.on(
            triggers=[question.submit, send.click],
            fn=handlers.ask,
            inputs=[image, question, beams, temperature, session],
            outputs=[chatbot, question, session],
            preprocess=False,
            api_name="ask",
            show_progress="minimal",
            **model_work,
        )
        # Stop a running answer first, then clear: otherwise its last streamed
        # update can land after the reset and bring the old chat back.
        reset.click(None, cancels=[ask_event, upload_event, dicom_event], queue=False).then(
            handlers.reset,
            outputs=[image, chatbot, question, session],
            api_name="reset",
            queue=False,
        )
        chatbot.clear(None, cancels=[ask_event], queue=False).then(
            handlers.restart,
            inputs=[session],
            outputs=[chatbot, session],
            api_name="restart",
            queue=False,
        )
        image.clear(None, cancels=[ask_event], queue=False).then(
            handlers.clear_image,
            outputs=[chatbot, session],
            api_name="clear_image",
            queue=False,
        )
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)
    return demo


def launch_demo(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    max_file_bytes: int | None = DEFAULT_MAX_BYTES,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str | None]:
    """Serve ``demo``: local only and without a public link unless asked.

    Returns Gradio's (app, local URL, share URL).
    """
    if host not in LOCAL_HOSTS and auth is None:
        log.warning("serving on %s without --auth: anyone who can reach it can use it", host)
    if share:
        log.warning("--share: creating a public link; anyone with the link can use the demo")
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        max_file_size=max_file_bytes,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        # Uploaded X-rays are not kept in the browser's run history.
        run_history=False,
        mcp_server=False,
        ssr_mode=False,
    )


def build_chat(cfg: Any, device: Any) -> Any:
    """The model, image processor and ``Chat`` that ``cfg`` (a Config) describes."""
    from xraygpt.conversation.chat import Chat
    from xraygpt.models.factory import load_model_and_processors

    model, vis_processor = load_model_and_processors(cfg, device=device)
    return Chat(model, vis_processor)


def main(args: argparse.Namespace) -> int:
    """Load the model of ``args.cfg_path`` and serve the demo until interrupted."""
    from xraygpt.common.config import Config
    from xraygpt.common.errors import XrayGPTError, debug_requested
    from xraygpt.common.launch import seed_everything, setup_logging

    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    try:
        device = resolve_device(args.gpu_id, args.device)
        cfg = Config(args.cfg_path, args.options)
        seed_everything(cfg.run_cfg.seed)
        model_type = cfg.model_cfg.get("model_type", "default")
        log.info("loading %s (%s) on %s", cfg.model_cfg.arch, model_type, device)
        chat = build_chat(cfg, device)
        max_bytes = args.max_upload_mb * MIB
        demo = build_demo(
            chat,
            model_note=f"{cfg.model_cfg.arch} / {model_type} from {args.cfg_path}",
            max_new_tokens=args.max_new_tokens,
            concurrency_limit=args.concurrency,
            max_file_bytes=max_bytes,
        )
    except XrayGPTError as err:
        # These messages name the file, key or flag at fault; a traceback adds nothing.
        if debug_requested():
            raise
        log.error("cannot start the demo: %s", err)
        return 2
    _, url, share_url = launch_demo(
        demo,
        host=args.host,
        port=args.port,
        share=args.share,
        auth=args.auth,
        max_file_bytes=max_bytes,
        prevent_thread_lock=True,
        quiet=True,
    )
    reach = "this machine only" if args.host in LOCAL_HOSTS else "reachable from the network"
    print(f"XrayGPT demo running on {url} ({reach}); Ctrl+C to stop.", flush=True)
    if share_url:
        print(f"Public link (anyone with it can use the demo): {share_url}", flush=True)
    # `docker stop` / systemd send SIGTERM: shut down as cleanly as on Ctrl+C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0
