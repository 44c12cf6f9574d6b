"""Applications on top of the library and the workflows: the Gradio demo (:mod:`.demo`)."""
