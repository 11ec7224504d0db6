"""CTransPath's convolutional stem, as a patch embedding that timm 1.0's SwinTransformer accepts.

Imported only inside the loader: it needs torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ConvStem"]


class ConvStem(nn.Module):
    """Two stride-2 3x3 conv + BN + ReLU stages and a 1x1 conv: a 4x-downsampling stem replacing Swin's
    4x4 patchify convolution. ``proj`` indices (0 conv, 1 BN, 3 conv, 4 BN, 6 conv) match the keys of
    the authors' checkpoint. Output (B, H/4, W/4, C), the NHWC layout of timm 1.0's Swin, then ``norm``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: type[nn.Module] | None = None,
        strict_img_size: bool = True,
        output_fmt: str = "NHWC",
        **_: Any,  # device/dtype from timm's builder: plain CPU construction is all the loader needs
    ) -> None:
        super().__init__()
        if patch_size != 4 or embed_dim % 8 or output_fmt != "NHWC":
            raise ValueError("ConvStem supports patch_size=4, embed_dim divisible by 8 and NHWC output only")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.strict_img_size = strict_img_size
        layers: list[nn.Module] = []
        cin, cout = in_chans, embed_dim // 8
        for _stage in range(2):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input is {tuple(x.shape[-2:])} px, CTransPath expects {self.img_size}")
        return self.norm(self.proj(x).permute(0, 2, 3, 1))
