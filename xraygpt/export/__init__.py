"""Exporters: the trained model in the ecosystem's formats (``python -m xraygpt.export``)."""
