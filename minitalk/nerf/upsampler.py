"""The 2D neural renderer: a feature map volume-rendered at low resolution, upsampled by a small CNN
(the Disentangling Head NeRF, section 3.2; HeadNeRF and EG3D before it). The rays, whose number
grows with the square of the image's side S, are cut by u^2: the fields return F channels and
are composited, as colours are (DialogueNeRF Eq. 4-5), on a grid of side s = S / u:

    feat(r) = sum_i T_i (1 - exp(-sigma_i delta_i)) f_i + (1 - A(r)) [c_bg, 0, ..., 0]      (F,)
    A(r)    = sum_i T_i (1 - exp(-sigma_i delta_i))                                        (opacity)

Channels 0-2 are thus the low-resolution image, which training supervises too, so the field
stays an image field. The CNN refines at s, doubles the size log2(u) times (halving channels),
and predicts a correction to the bilinearly upsampled person, composited over the plate at S:

    P_S = up(feat[:3] - (1 - A) c_bg) + dP,   A_S = clamp(up(A) + dA, 0, 1)
    I_S = P_S + (1 - A_S) c_bg,S

Zero-initialised corrections make an untrained CNN a bilinear upsampler; what it learns is the
detail (edges, teeth, eyes) the low-resolution field cannot hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FACTORS = (1, 2, 4, 8)  # 1: no CNN, the fields render colours per pixel


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))), 3x3, same size."""

    def __init__(self, width: int):
        super().__init__()
        self.a = nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate")
        self.b = nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.2))


class NeuralRenderer(nn.Module):
    """Feature map (B, F, s, s) and opacity (B, 1, s, s) -> image (B, 3, u s, u s) over a background.

    Replicate padding, not zeros: training sees patches and rendering whole images, and a patch's
    border must look to the CNN like the inside of a picture, not like a black frame."""

    def __init__(self, channels: int, factor: int, width: int = 32, blocks: int = 2):
        super().__init__()
        if factor not in FACTORS[1:]:
            raise ValueError(f"upsampling factor {factor}: must be one of {FACTORS[1:]}")
        self.factor = factor
        self.stem = nn.Conv2d(channels + 1, width, 3, padding=1, padding_mode="replicate")
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        stages = []
        for _ in range(factor.bit_length() - 1):  # log2(u) doublings, channels halved each time
            stages.append(nn.Conv2d(width, width // 2, 3, padding=1, padding_mode="replicate"))
            width //= 2
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv2d(width, 4, 3, padding=1, padding_mode="replicate")  # dP (3), dA (1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, feat: torch.Tensor, opacity: torch.Tensor, background: torch.Tensor,
                background_low: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """feat (B, F, s, s) and opacity (B, 1, s, s) composited as in the module's docstring (the
        background in channels 0-2), background (B, 3, S, S) and background_low (B, 3, s, s) the
        plate at both sizes -> I_S (B, 3, S, S), unclamped (training sees its true error)."""
        size = background.shape[-1]
        person = feat[:, :3] - (1 - opacity) * background_low  # premultiplied colour at s
        x = F.leaky_relu(self.stem(torch.cat([feat, opacity], 1)), 0.2)
        x = self.blocks(x)
        for conv in self.stages:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="bilinear")), 0.2)
        delta = self.out(x)  # (B, 4, S, S)
        up = F.interpolate(torch.cat([person, opacity], 1), size=(size, size), mode="bilinear")
        alpha = (up[:, 3:] + delta[:, 3:]).clamp(0, 1)
        return up[:, :3] + delta[:, :3] + (1 - alpha) * background
