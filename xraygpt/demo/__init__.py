"""The Gradio chat demo: upload a chest X-ray and ask XrayGPT about it.

``xraygpt.demo.app.build_demo(chat)`` builds the app around any ``Chat``;
``xraygpt.demo.app.main`` (behind ``demo.py``) loads the model and serves it.
Nothing heavy is imported here, so ``import xraygpt.demo`` stays instant.
"""
