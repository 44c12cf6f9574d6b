"""The Gradio chat demo: upload a chest X-ray and ask XrayGPT about it.

``xraygpt.apps.demo.app.build_demo(chat)`` builds the app around any ``Chat``;
``xraygpt.apps.demo.app.main`` (behind ``demo.py``) loads the model and serves it.
Nothing heavy is imported here, so ``import xraygpt.apps.demo`` stays instant.
"""
