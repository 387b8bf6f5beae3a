"""diffseg3d.core.losses: cross entropy + foreground soft Dice, and the noise L2 (paper 3.3)."""

from diffseg3d.core.losses.noise import noise_l2
from diffseg3d.core.losses.segmentation import (
    DICE_SMOOTHING,
    cross_entropy,
    segmentation_loss,
    soft_dice_loss,
)

__all__ = ["DICE_SMOOTHING", "cross_entropy", "noise_l2", "segmentation_loss", "soft_dice_loss"]
