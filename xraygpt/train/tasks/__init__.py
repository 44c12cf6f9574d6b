"""Tasks: what one training step computes (``BaseTask`` and its stages)."""
