"""The demo in a real browser: Playwright driving Debian's Chromium (``-m browser``).

Chromium is not downloaded by Playwright; ``.ci/run`` installs the distribution's
package (``apt-get install -y chromium``). The screenshot of the finished chat is
written to ``test-artifacts/demo.png``.
"""

import shutil
import socket
import threading
import time

import pytest

from xraygpt.common.config import REPO_ROOT

pytestmark = [
    pytest.mark.browser,
    # Gradio's queue calls a pandas option that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO_ROOT / "test-artifacts" / "demo.png"
QUESTION = "Describe the given chest x-ray image in detail."

# Records every text the newest bot message shows, to see the answer stream in.
WATCH_ANSWER = """
() => {
  window.__answers = [];
  const chat = document.querySelector('#chatbot');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    if (bots.length < 2) return;
    const text = bots[bots.length - 1].innerText.trim();
    if (text && window.__answers[window.__answers.length - 1] !== text) window.__answers.push(text);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "Chromium not found: install it with `apt-get install -y chromium` "
        "(the browser tests use the system browser, Playwright downloads none)"
    )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.close()


def test_upload_ask_and_see_the_answer(tiny_demo, page, xray_png):
    from playwright.sync_api import expect

    page.goto(tiny_demo.url)
    expect(page.get_by_text("Research use only.")).to_be_visible(timeout=60_000)

    page.locator("#xray-image input[type=file]").set_input_files(str(xray_png))
    bots = page.locator('#chatbot [data-testid="bot"]')
    expect(bots.first).to_contain_text("X-ray 'chest.png' loaded", timeout=60_000)

    page.evaluate(WATCH_ANSWER)
    box = page.locator("#question textarea")
    box.fill(QUESTION)
    box.press("Enter")
    user = page.locator('#chatbot [data-testid="user"]')
    expect(user.last).to_have_text(QUESTION, timeout=60_000)
    expect(bots).to_have_count(2, timeout=60_000)
    # The stream is over once the question box is free and no progress shows.
    expect(box).to_have_value("", timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('#chatbot .generating, #chatbot .pending')",
        timeout=60_000,
    )
    page.wait_for_timeout(500)
    answer = bots.last.inner_text().strip()
    assert answer and not answer.startswith("⚠️"), answer
    seen = page.evaluate("window.__answers")
    assert seen and seen[-1] == answer

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    # An example X-ray fills the image box; the next question starts a new
    # conversation about it.
    page.locator("#xray-examples button.gallery-item").nth(1).click()
    # The click fills the box through a round trip; ask only once the box shows
    # the example, as a user would (asking earlier sends the previous image).
    expect(page.locator('#xray-image img[src*="phantom_cardiomegaly"]')).to_have_count(
        1, timeout=60_000
    )
    box.fill("What are the main findings in this chest x-ray?")
    box.press("Enter")
    expect(bots.first).to_contain_text("phantom_cardiomegaly.png", timeout=60_000)
    expect(bots).to_have_count(2, timeout=60_000)
    expect(user).to_have_count(1)


class SlowChat:
    """Wraps the scripted chat to stream a long answer slowly, so it can be interrupted."""

    def __init__(self, chat) -> None:
        self.chat = chat
        self.stopped = threading.Event()

    def __getattr__(self, name):
        return getattr(self.chat, name)

    def stream_answer(self, conv, img_list, **generation):
        conv.append_message(conv.roles[1], None)
        text = ""
        try:
            for i in range(300):
                time.sleep(0.05)
                text += f" word{i}"
                yield text.strip()
        finally:
            self.stopped.set()
            conv.messages[-1][1] = text


def test_reset_stops_the_answer_and_clearing_the_chat_restarts(fake_chat, page, xray_png):
    from playwright.sync_api import expect

    from xraygpt.apps.demo.app import build_demo, launch_demo

    chat = SlowChat(fake_chat)
    demo = build_demo(chat, examples=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        page.goto(url)
        upload = page.locator("#xray-image input[type=file]")
        bots = page.locator('#chatbot [data-testid="bot"]')
        box = page.locator("#question textarea")

        upload.set_input_files(str(xray_png))
        expect(bots.first).to_contain_text("loaded", timeout=60_000)
        box.fill("Tell me everything.")
        box.press("Enter")
        expect(bots.last).to_contain_text("word5", timeout=60_000)
        page.locator("#reset").click()
        assert chat.stopped.wait(timeout=10), "Reset did not stop the running answer"
        page.wait_for_timeout(1000)  # a late streamed update would show up by now
        expect(bots).to_have_count(0)
        expect(page.locator('#chatbot [data-testid="user"]')).to_have_count(0)

        upload.set_input_files(str(xray_png))
        expect(bots.first).to_contain_text("loaded", timeout=60_000)
        box.fill("First question")
        box.press("Enter")
        expect(bots).to_have_count(2, timeout=60_000)
        page.locator("#chatbot button[aria-label*='clear' i]").first.click()
        expect(bots).to_have_count(1, timeout=10_000)
        expect(bots.first).to_contain_text("loaded")
    finally:
        demo.close()


def test_dicom_button_shows_the_windowed_image(tiny_demo, page, xray_dicom):
    from playwright.sync_api import expect

    page.goto(tiny_demo.url)
    expect(page.get_by_text("Research use only.")).to_be_visible(timeout=60_000)
    with page.expect_file_chooser() as chooser:
        page.locator("#dicom-upload").click()
    chooser.value.set_files(str(xray_dicom))
    bots = page.locator('#chatbot [data-testid="bot"]')
    expect(bots.first).to_contain_text("DICOM X-ray 'chest.dcm' loaded", timeout=60_000)
    expect(bots.first).to_contain_text("view position: PA")
    # The image box now shows the windowed PNG, which a browser can draw.
    shown = page.locator("#xray-image img")
    expect(shown).to_be_visible(timeout=30_000)
    assert (
        page.evaluate(
            "() => { const img = document.querySelector('#xray-image img');"
            " return img.complete && img.naturalWidth; }"
        )
        == 80
    )
    assert "Zzyzx" not in page.content() and "FAKEPID" not in page.content()


def _ask_and_wait(page, question: str, count: int) -> str:
    """Type ``question``, wait for the ``count``-th bot message to finish; return it."""
    from playwright.sync_api import expect

    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")
    bots = page.locator('#chatbot [data-testid="bot"]')
    expect(bots).to_have_count(count, timeout=120_000)
    expect(box).to_have_value("", timeout=120_000)
    page.wait_for_function(
        "() => !document.querySelector('#chatbot .generating, #chatbot .pending')",
        timeout=120_000,
    )
    page.wait_for_timeout(500)
    return bots.last.inner_text().strip()


@pytest.mark.slow
def test_a_follow_up_about_a_phantom_is_answered_from_its_image(quickstart_run, page):
    """The trained tiny model in the demo: a report, then follow-ups matching the labels."""
    import json

    from xraygpt.apps.demo.app import build_demo, launch_demo
    from xraygpt.common.config import Config
    from xraygpt.conversation.chat import Chat
    from xraygpt.data.phantom.questions import case_findings, read_yes_no
    from xraygpt.models.factory import load_model_and_processors

    run = quickstart_run
    assert run.result.returncode == 0, (run.result.stdout + run.result.stderr)[-3000:]
    ckpts = ",".join(
        str(run.output / f"xraygpt_tiny_stage{i}" / "checkpoint_last.pth") for i in range(1, 5)
    )
    cfg = Config(
        REPO_ROOT / "eval_configs" / "xraygpt_tiny_eval.yaml",
        [f"model.tokenizer={run.data / 'tokenizer'}", f"model.ckpt=[{ckpts}]"],
    )
    model, vis_processor = load_model_and_processors(cfg, device="cpu")
    demo = build_demo(Chat(model, vis_processor), model_note="tiny recipe", max_new_tokens=160)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, url, _ = launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        # A test phantom with a pleural effusion and no pneumothorax: one yes, one no.
        entries = json.loads((run.data / "filter_cap.json").read_text())["annotations"]
        entry = next(
            e
            for e in entries
            if e["split"] == "test"
            and case_findings(e["case"])["Pleural Effusion"]
            and not case_findings(e["case"])["Pneumothorax"]
        )
        from playwright.sync_api import expect

        page.goto(url)
        expect(page.get_by_text("Research use only.")).to_be_visible(timeout=60_000)
        # Near-greedy answers: the lowest temperature the slider allows.
        temperature = page.get_by_label("number input for Temperature")
        temperature.fill("0.1")
        temperature.press("Enter")
        # Ask only once the slider holds it: the question sends the slider's value.
        expect(page.get_by_label("range slider for Temperature")).to_have_value("0.1")
        page.locator("#xray-image input[type=file]").set_input_files(
            str(run.data / "image" / f"{entry['image_id']}.png")
        )
        bots = page.locator('#chatbot [data-testid="bot"]')
        expect(bots.first).to_contain_text("loaded", timeout=60_000)
        report = _ask_and_wait(page, "Describe the given chest x-ray image in detail.", 2)
        assert "effusion" in report.lower(), report
        effusion = _ask_and_wait(page, "Is there a pleural effusion?", 3)
        assert read_yes_no(effusion) == 1, (report, effusion)
        pneumothorax = _ask_and_wait(page, "Is there a pneumothorax?", 4)
        assert read_yes_no(pneumothorax) == 0, (report, pneumothorax)
    finally:
        demo.close()
