"""Random affine augmentation of whole training batches, on the device they live on.

One `affine_grid` + `grid_sample` per batch, never a loop over images. The randomness is
a pure function of (seed, batch number, rank): a generator seeded per batch, so a resumed run
draws the augmentations of an uninterrupted one without any saved RNG state.
"""

import math

import torch
import torch.nn.functional as F

# Distinct generator streams for ranks of one run: batch counts stay far below this.
BATCHES_PER_RANK = 1 << 40
MAX_RANKS = 1 << 10


class RandomAffine:
    """Rotate, scale, translate and (optionally) mirror each image of a batch independently.

    Images are uint8 or float (N, H, W) pixels with a black (0) background; the result is
    float pixels on the same scale, with the uncovered area filled black.

    `interpolation` is grid_sample's mode. "bilinear" blends neighbouring pixels, which a
    rotation or scaling needs, but it also blurs every shift by a fraction of a pixel: the
    training images grow softer than the test images. "nearest" moves whole pixels, so with
    no rotation or scaling it is a random crop (shift and pad): fine texture stays sharp.
    """

    def __init__(self, rotation_deg: float, translation: float, scale: float, horizontal_flip: bool,
                 interpolation: str = "bilinear"):
        self.rotation_deg, self.translation, self.scale = rotation_deg, translation, scale
        self.horizontal_flip, self.interpolation = horizontal_flip, interpolation

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        count, device = len(images), images.device
        generator = torch.Generator(device=device).manual_seed(seed)

        def uniform(bound: float) -> torch.Tensor:  # (N,) in [-bound, bound]
            return (torch.rand(count, generator=generator, device=device) * 2 - 1) * bound

        angle = uniform(math.radians(self.rotation_deg))
        zoom = 1 + uniform(self.scale)
        # affine_grid's coordinates span [-1, 1]: a shift of a fraction f of the image is 2f.
        shift_x, shift_y = uniform(2 * self.translation), uniform(2 * self.translation)
        mirror = torch.ones(count, device=device)
        if self.horizontal_flip:
            mirror = torch.where(torch.rand(count, generator=generator, device=device) < 0.5, -mirror, mirror)
        # theta maps output coordinates to input ones: the inverse of "zoom, then rotate".
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([
            torch.stack([cos * mirror, sin, shift_x], dim=1),
            torch.stack([-sin * mirror, cos, shift_y], dim=1),
        ], dim=1)
        pixels = images.unsqueeze(1).float()
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
        moved = F.grid_sample(pixels, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False)
        return moved.squeeze(1)


def batch_seed(seed: int, batch_number: int, rank: int) -> int:
    """The generator seed of one training batch: distinct per run seed, batch and rank."""
    return ((seed * MAX_RANKS + rank) * BATCHES_PER_RANK + batch_number) % (1 << 63)
