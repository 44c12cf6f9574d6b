"""Soak the demo: concurrent browser sessions against the served tiny model, on loopback.

    python benchmarks/bench_demo_soak.py                          # 16 sessions x 5 questions
    python benchmarks/bench_demo_soak.py --sessions 4 --questions 2 --max-seconds 60

Serves the demo (``xraygpt.apps.demo.app``) around the tiny ``mini_gpt4`` with
random weights on ``127.0.0.1`` (nothing leaves the machine), then starts
``--sessions`` ``gradio_client`` sessions at once. Each uploads its own
X-ray (``soak_<i>.png``, its own size) and asks ``--questions`` questions that
name its own session, one after the other, as a user would. The run is
bounded: no question is sent after ``--max-seconds``, and those left unsent
count as failures.

Checks (exit status 1 when one fails):

* no request failed, and no answer is a warning of the app;
* no cross-talk: every session's final chat is its own — its own image's
  notice first, then exactly its own questions, in order, each answered;
* the queue's concurrency limit held: generations running at once never
  exceeded ``--concurrency`` (counted around ``Chat.stream_answer``);
* the server's resident memory after the soak is within ``--rss-bound-mb`` of
  before (the server runs in a process of its own, so the clients do not count;
  measured after one warm-up session, so that lazy imports and caches do not
  count as growth; Linux only).

Prints one JSON line (for BENCHMARKS.md) and a table: requests, p50/p95 time
to first token and to the full answer (seconds, as the client sees them,
queueing included), errors, RSS before/after.
"""

from __future__ import annotations

import argparse
import gc
import logging
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine
from PIL import Image

from xraygpt.common.errors import run_main

WARNING_PREFIX = "⚠️"


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident set size of process ``pid`` now, from Linux's ``/proc`` (None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


@dataclass
class SessionResult:
    index: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    first_token_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    final: list[dict] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)


class GenerationCounter:
    """Wraps ``chat.stream_answer`` to count the generations running at once."""

    def __init__(self, chat: Any) -> None:
        self.active = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()
        original = chat.stream_answer

        def counted(*args: Any, **kwargs: Any):
            with self._lock:
                self.active += 1
                self.calls += 1
                self.peak = max(self.peak, self.active)
            try:
                yield from original(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        chat.stream_answer = counted


def build_server(args: argparse.Namespace):
    """The demo around the tiny model (random weights), served on a free loopback port."""
    torch.set_num_threads(1)
    from xraygpt.components import register_components

    register_components()
    from xraygpt.apps.demo.app import build_demo, launch_demo
    from xraygpt.common.config import Config
    from xraygpt.conversation.chat import Chat
    from xraygpt.models.factory import load_model_and_processors

    torch.manual_seed(0)
    cfg = Config(user_config={"model": {"arch": "mini_gpt4", "model_type": "tiny"}})
    model, vis_processor = load_model_and_processors(cfg, device="cpu")
    chat = Chat(model, vis_processor, max_length=args.max_length)
    counter = GenerationCounter(chat)
    demo = build_demo(
        chat,
        model_note="tiny mini_gpt4 with random weights (soak)",
        max_new_tokens=args.max_new_tokens,
        concurrency_limit=args.concurrency,
        max_queue_size=max(32, 2 * args.sessions),
        examples=False,
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    return demo, url, counter


def serve(args: argparse.Namespace, conn: Any) -> None:
    """The server process: serve, then answer ``stats`` / ``reset`` / ``stop`` on ``conn``.

    A process of its own, so that its RSS is the server's alone, not the clients'.
    """
    sys.stdout = sys.stderr  # gradio's own prints: stdout carries the report alone
    logging.getLogger("httpx").setLevel(logging.WARNING)
    demo, url, counter = build_server(args)
    conn.send(url)
    try:
        while True:
            command = conn.recv()
            if command == "reset":
                counter.peak = 0
            elif command == "stop":
                break
            gc.collect()
            conn.send({"peak": counter.peak, "calls": counter.calls, "active": counter.active})
    finally:
        demo.close()
        conn.send("stopped")


def write_images(folder: Path, n: int) -> list[Path]:
    """One distinct X-ray-like PNG per session: its own size, so its notice is its own."""
    paths = []
    for i in range(n):
        height, width = 96 + i, 80 + 2 * i
        yy, xx = np.mgrid[0:height, 0:width]
        disc = (yy - height // 2) ** 2 + (xx - width // 2) ** 2 < (10 + i) ** 2
        pixels = ((xx * 2 + disc * 80 + i * 3) % 256).astype(np.uint8)
        path = folder / f"soak_{i:02d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(path)
    return paths


def run_session(
    url: str, index: int, image: Path, n_questions: int, deadline: float, start: threading.Barrier
) -> SessionResult:
    from gradio_client import Client, handle_file

    result = SessionResult(index)
    try:
        client = Client(url, verbose=False, analytics_enabled=False)
        start.wait(timeout=120)
        client.predict(handle_file(str(image)), api_name="/upload")
        result.requests += 1
    except Exception as err:  # noqa: BLE001 - every failure is counted and reported
        result.errors.append(f"upload: {type(err).__name__}: {err}")
        return result
    for q in range(n_questions):
        if time.monotonic() > deadline:
            result.errors.append(f"question {q}: not sent, --max-seconds reached")
            continue
        question = f"Session {index} question {q}: what does image {image.stem} show?"
        result.questions.append(question)
        result.requests += 1
        sent = time.perf_counter()
        first = None
        try:
            job = client.submit(None, question, 1, 1.0, api_name="/ask")
            # the image notice, then question and answer pairs
            expected = 1 + 2 * len(result.questions)
            last = None
            for output in job:
                last = output
                messages = output[0]
                if (
                    first is None
                    and len(messages) == expected
                    and messages[-1]["role"] == "assistant"
                ):
                    first = time.perf_counter() - sent
            final = job.result(timeout=max(1.0, deadline + 60 - time.monotonic()))
            done = time.perf_counter() - sent
            messages = (final or last)[0]
            if messages and _text(messages[-1]).startswith(WARNING_PREFIX):
                # A failed turn leaves the conversation as it was: ask the next question.
                result.errors.append(f"question {q}: the app warned: {_text(messages[-1])}")
                result.questions.pop()
                continue
            result.final = messages
            result.first_token_s.append(first if first is not None else done)
            result.answer_s.append(done)
        except Exception as err:  # noqa: BLE001
            result.errors.append(f"question {q}: {type(err).__name__}: {err}")
    return result


def cross_talk(result: SessionResult, image: Path) -> str | None:
    """Why ``result``'s final chat is not wholly its own session's, or None."""
    chat = result.final
    if not chat:
        return "no final chat"
    if f"'{image.name}'" not in _text(chat[0]):
        return f"first message is not its image's notice: {_text(chat[0])[:80]!r}"
    users = [_text(m) for m in chat if m["role"] == "user"]
    if users != result.questions:
        return f"its questions came back as {users}"
    if len(chat) != 1 + 2 * len(result.questions):
        return f"{len(chat)} messages for {len(result.questions)} questions"
    return None


def soak(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing

    logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    server = ctx.Process(target=serve, args=(args, child_conn), daemon=True)
    server.start()
    if not conn.poll(300):
        server.kill()
        raise RuntimeError("the demo server did not start within 300 s")
    url = conn.recv()

    def ask_server(command: str) -> dict[str, int]:
        conn.send(command)
        return conn.recv()

    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = write_images(Path(tmp), args.sessions + 1)
            # Warm-up: one session, so that lazy imports and first-call caches are in place.
            warm = run_session(url, -1, images[-1], 1, time.monotonic() + 120, threading.Barrier(1))
            if warm.errors:
                raise RuntimeError(f"warm-up session failed: {warm.errors}")
            calls_before = ask_server("reset")["calls"]
            rss_before = rss_mb(server.pid)
            started = time.monotonic()
            deadline = started + args.max_seconds
            barrier = threading.Barrier(args.sessions)
            results: list[SessionResult | None] = [None] * args.sessions

            def worker(i: int) -> None:
                results[i] = run_session(url, i, images[i], args.questions, deadline, barrier)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.sessions)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=args.max_seconds + 300)
            wall = time.monotonic() - started
            stats = ask_server("stats")  # the server collects its garbage first
            rss_after = rss_mb(server.pid)
    finally:
        conn.send("stop")
        conn.poll(60)
        server.join(timeout=60)
        if server.is_alive():
            server.kill()

    done = [r for r in results if r is not None]
    errors = [f"session {r.index}: {e}" for r in done for e in r.errors]
    errors += [f"session {i}: did not finish" for i, r in enumerate(results) if r is None]
    talk = {r.index: why for r in done if (why := cross_talk(r, images[r.index])) is not None}
    first = [t for r in done for t in r.first_token_s]
    full = [t for r in done for t in r.answer_s]
    row = {
        "sessions": args.sessions,
        "questions": args.questions,
        "requests": sum(r.requests for r in done),
        "answers": len(full),
        "errors": len(errors),
        "cross_talk": len(talk),
        "ttft_p50_s": percentile(first, 50),
        "ttft_p95_s": percentile(first, 95),
        "answer_p50_s": percentile(full, 50),
        "answer_p95_s": percentile(full, 95),
        "peak_generations": stats["peak"],
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "wall_s": wall,
    }
    generated = stats["calls"] - calls_before
    grew = None if rss_before is None or rss_after is None else rss_after - rss_before
    checks = {
        "no failed request": not errors,
        "no cross-talk": not talk,
        f"at most {args.concurrency} generation(s) at once": stats["peak"] <= args.concurrency,
        f"every question generated once ({generated})": generated == len(full),
        f"server RSS growth <= {args.rss_bound_mb} MiB": grew is None or grew <= args.rss_bound_mb,
    }
    return {"row": row, "checks": checks, "errors": errors[:20], "cross_talk": talk}


def print_report(args: argparse.Namespace, out: dict[str, Any]) -> None:
    import json

    record = {
        "benchmark": "demo_soak",
        "machine": machine(),
        "args": vars(args),
        "results": [out["row"]],
        "checks": out["checks"],
    }
    print(json.dumps(record))
    row = out["row"]

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    print()
    print(f"{'requests':24s}{row['requests']} ({row['answers']} answers)")
    print(
        f"{'time to first token':24s}p50 {fmt(row['ttft_p50_s'])} s, p95 {fmt(row['ttft_p95_s'])} s"
    )
    print(
        f"{'time to full answer':24s}p50 {fmt(row['answer_p50_s'])} s, "
        f"p95 {fmt(row['answer_p95_s'])} s"
    )
    print(f"{'errors':24s}{row['errors']} (cross-talk: {row['cross_talk']})")
    print(f"{'generations at once':24s}peak {row['peak_generations']} (limit {args.concurrency})")
    if row["rss_before_mb"] is not None and row["rss_after_mb"] is not None:
        print(
            f"{'server RSS':24s}{row['rss_before_mb']:.0f} MiB before, "
            f"{row['rss_after_mb']:.0f} MiB after "
            f"({row['rss_after_mb'] - row['rss_before_mb']:+.0f} MiB)"
        )
    print(f"{'wall':24s}{row['wall_s']:.1f} s")
    for name, ok in out["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for line in out["errors"]:
        print(f"error: {line}")
    for index, why in out["cross_talk"].items():
        print(f"cross-talk: session {index}: {why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16, help="concurrent sessions")
    parser.add_argument("--questions", type=int, default=5, help="questions per session")
    parser.add_argument(
        "--max-seconds", type=float, default=180, help="send no question after this long"
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="the demo's --concurrency (default 1)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="the chat's context length (room for 5 questions and answers)",
    )
    parser.add_argument(
        "--rss-bound-mb", type=float, default=200, help="allowed RSS growth over the soak"
    )
    args = parser.parse_args(argv)
    if min(args.sessions, args.questions, args.concurrency) < 1 or args.max_seconds <= 0:
        parser.error("--sessions, --questions, --concurrency and --max-seconds must be positive")
    out = soak(args)
    print_report(args, out)
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
