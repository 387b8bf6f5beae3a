"""`make_loss_fn` passes `dice_absent_classes` to the segmentation loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.losses import segmentation_loss
from diffseg3d.core.train.steps import make_loss_fn

L3 = float(np.log(3.0))
LOGITS = jnp.array([[[[0.0, 0.0, L3], [L3, 0.0, 0.0]]], [[[0.0, 0.0, L3], [L3, 0.0, 0.0]]]])
LABEL = jnp.array([[[2, 1]], [[2, 0]]])  # class 1 absent from example 1


class FixedLogits(nn.Module):
    """Returns LOGITS plus a zero-initialised bias: a network whose output is known."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, image):
        return LOGITS + self.param("bias", nn.initializers.zeros, (self.num_classes,))


def test_make_loss_fn_passes_dice_absent_classes():
    model = FixedLogits()
    image = jnp.zeros((2, 1, 2, 1))
    params = model.init(jax.random.PRNGKey(0), image)["params"]
    for option in ("include", "exclude"):
        loss_fn = make_loss_fn(model, method="unet", dice_absent_classes=option)
        loss, parts = loss_fn(params, image, LABEL, jax.random.PRNGKey(1))
        expected, expected_parts = segmentation_loss(LOGITS, LABEL, dice_absent_classes=option)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
        np.testing.assert_allclose(parts["loss_dice"], expected_parts["loss_dice"], rtol=1e-6)
    include = make_loss_fn(model, method="unet")(params, image, LABEL, None)[1]["loss_dice"]
    exclude = make_loss_fn(model, method="unet", dice_absent_classes="exclude")(
        params, image, LABEL, None)[1]["loss_dice"]
    assert float(include) > float(exclude) + 0.05
