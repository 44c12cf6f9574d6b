"""XrayGPT: chest radiograph summarisation with EVA-ViT-g, a Q-Former and Vicuna."""

__version__ = "0.1.0"
