"""``tiny_cnn``: a small convolutional vision encoder for the tiny recipe.

At CPU scale a ViT learns the phantom findings too slowly: a ViT of width 128
and depth 2 trained on direct labels for 90 s learned only the salient
findings (cardiomegaly, effusion) and none of pneumothorax, consolidation,
nodule or device. A six-layer CNN with batch normalisation learns all six in
about a minute and a half on two CPU cores, as CXR encoders such as
torchxrayvision's DenseNets are convolutional too.

It follows the vision-encoder contract of :mod:`xraygpt.models.vision_encoders`:
``forward(images [B, 3, H, W]) -> tokens [B, N, C]``. The tokens are, like a
ViT's CLS + patch tokens, two global tokens (the mean- and max-pooled feature
map) followed by the ``(H/16) x (W/16)`` grid of feature vectors. With
``vision_config.num_classes > 0`` the encoder carries its pretraining head
(a linear layer on the two global tokens), as timm models carry theirs; the
stage-1 model :mod:`xraygpt.models.encoder_classifier` trains it, and a
``mini_gpt4`` built with the same ``vision_config`` loads it unused.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xraygpt.common.registry import registry
from xraygpt.models.vision_encoders import _options

STRIDE = 16  # total down-sampling: a 4x4 patch stem, then two stride-2 stages


class ParamBatchNorm2d(nn.Module):
    """``BatchNorm2d`` whose running statistics are parameters, not buffers.

    Checkpoints of this project hold the trainable parameters only (the
    MiniGPT-4 format), so buffers would be lost between the encoder's
    pretraining stage and the stages that load it frozen. As parameters the
    statistics travel with the weights. They are still estimated the usual
    way (a running average of batch statistics in training mode); gradient
    descent leaves them alone: the forward pass ties them to the output with a
    factor of zero, so they get an exactly-zero gradient (AdamW then moves
    them by zero; they are 1-D, so no weight decay applies), and DDP sees them
    used.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.running_mean = nn.Parameter(torch.zeros(channels))
        self.running_var = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ``.data``: F.batch_norm updates the statistics in place, outside autograd.
        out = F.batch_norm(
            x,
            self.running_mean.data,
            self.running_var.data,
            self.weight,
            self.bias,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )
        if self.training and self.running_mean.requires_grad:
            out = out + 0.0 * (self.running_mean.sum() + self.running_var.sum())
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, momentum={self.momentum}, eps={self.eps}"


def _conv_block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        ParamBatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@registry.register_vision_encoder("tiny_cnn")
class TinyCNN(nn.Module):
    """Patch stem (4x4, stride 4) and three stages of 3x3 convolutions, widths w, 2w, 4w.

    ``vision_config`` keys: ``width`` (w, default 32; the tokens are 4w wide)
    and ``num_classes`` (size of the pretraining head; 0: no head).
    ``model.image_size`` must be a multiple of 16.
    """

    DEFAULTS: dict[str, Any] = {"width": 32, "num_classes": 0}

    def __init__(self, image_size: int, width: int = 32, num_classes: int = 0) -> None:
        super().__init__()
        if image_size % STRIDE:
            raise ValueError(
                f"model.image_size {image_size} is not a multiple of {STRIDE}, the tiny_cnn "
                f"encoder's stride"
            )
        if width < 1 or num_classes < 0:
            raise ValueError(
                f"tiny_cnn needs vision_config.width >= 1 and num_classes >= 0, "
                f"got width={width}, num_classes={num_classes}"
            )
        self.image_size = image_size
        self.grid_size = image_size // STRIDE
        self.num_features = 4 * width
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=4, bias=False),
            ParamBatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            _conv_block(width, width),
            _conv_block(width, 2 * width, stride=2),
            _conv_block(2 * width, 2 * width),
            _conv_block(2 * width, 4 * width, stride=2),
            _conv_block(4 * width, 4 * width),
        )
        self.head = nn.Linear(2 * self.num_features, num_classes) if num_classes else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, cfg: Any) -> TinyCNN:
        opts = _options(cfg, cls.DEFAULTS, "tiny_cnn")
        if float(cfg.drop_path_rate) != 0.0:
            raise ValueError(
                "model.drop_path_rate must be 0 with vit_model tiny_cnn (no residual paths)"
            )
        if cfg.use_grad_checkpoint:
            raise ValueError(
                "model.use_grad_checkpoint: tiny_cnn is too small to need it; set it false"
            )
        return cls(
            int(cfg.image_size), width=int(opts["width"]), num_classes=int(opts["num_classes"])
        )

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, H/16, W/16]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"tiny_cnn expects images [B, 3, H, W], got {tuple(images.shape)}")
        return self.stages(self.stem(images))

    @staticmethod
    def pooled(features: torch.Tensor) -> torch.Tensor:
        """Mean- and max-pooled features [B, 2, C]: global extent and the most salient spot."""
        return torch.stack([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [B, 2 + (H/16)(W/16), C]: the two pooled tokens, then the grid."""
        features = self.feature_map(images)
        grid = features.flatten(2).transpose(1, 2)
        return torch.cat([self.pooled(features), grid], dim=1)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] from the tokens of :meth:`forward`."""
        if self.head is None:
            raise RuntimeError(
                "this tiny_cnn has no head: build it with vision_config.num_classes > 0"
            )
        return self.head(tokens[:, :2].flatten(1))
