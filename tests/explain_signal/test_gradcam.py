"""Grad-CAM (Selvaraju et al. 2017, eq. 1-2): Captum parity (LayerGradCam + bilinear interpolation), the default
layer of each zoo model, named layers, channel broadcast, and clear errors where it cannot apply."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

import xaicore
from tests.explain_signal.conftest import assert_close, zoo_model
from xaicore import XaiCoreError
from xaicore.errors import NotApplicable
from xaicore.explain.signal import gradcam_layer

DEFAULT_LAYER = {"cnn": "conv2", "vgg_bn": "conv2_2", "resnet": "block2.conv2", "densenet": "transition.conv"}


def captum_gradcam(model, x, target, layer_name):
    layer = dict(model.named_modules())[layer_name]
    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear").expand_as(x)


@pytest.mark.parametrize("arch", list(DEFAULT_LAYER))
def test_default_layer_is_the_last_conv_and_equals_captum(arch, batch64):
    model = zoo_model(arch)
    x, target = batch64
    assert gradcam_layer(model, None)[0] == DEFAULT_LAYER[arch]
    ours = xaicore.explain(model, x, target, method="gradcam")
    assert_close(ours, captum_gradcam(model, x, target, DEFAULT_LAYER[arch]))
    assert float(ours.min()) >= 0


@pytest.mark.parametrize(("arch", "layer"), [("resnet", "block2"), ("resnet", "block1.downsample.conv"),
                                             ("cnn", "relu1"), ("densenet", "dense2"), ("vgg_bn", "pool1")])
def test_named_layer_equals_captum(arch, layer, batch64):
    model = zoo_model(arch)
    x, target = batch64
    assert_close(xaicore.explain(model, x, target, method="gradcam", layer=layer),
                 captum_gradcam(model, x, target, layer))


def test_three_channel_inputs_get_the_map_on_every_channel():
    model = zoo_model("vgg_bn", input_shape=(3, 32, 32))
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 4, 9])
    ours = xaicore.explain(model, x, target, method="gradcam")
    assert ours.shape == x.shape
    assert torch.equal(ours[:, 0], ours[:, 1]) and torch.equal(ours[:, 0], ours[:, 2])
    assert_close(ours, captum_gradcam(model, x, target, "conv2_2"))


def test_mlp_has_no_conv_layer(mlp, digit_batch):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"gradcam needs a convolutional layer and Sequential has no nn\.Conv2d"):
        xaicore.explain(mlp, x, target, method="gradcam")


def test_bad_layers_are_refused(cnn, digit_batch, helpers):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match=r"no layer 'conv9'; its conv layers: conv1, conv2"):
        xaicore.explain(cnn, x, target, method="gradcam", layer="conv9")
    with pytest.raises(XaiCoreError, match=r"layer 'fc1' outputs \(8, 128\).*\(B, K, h, w\)"):
        xaicore.explain(cnn, x, target, method="gradcam", layer="fc1")
    with pytest.raises(NotApplicable, match=r"'gradcam' explains image inputs.*tabular \(B, F\) input \(8, 784\)"):
        xaicore.explain(cnn[5:], x.flatten(1), target, method="gradcam")
    helpers.assert_no_hooks(cnn)


def test_hook_is_removed_when_the_forward_pass_fails(cnn, digit_batch, helpers):
    x, target = digit_batch
    with pytest.raises(XaiCoreError, match="outside 0..9"):
        xaicore.explain(cnn, x, target + 10, method="gradcam")
    helpers.assert_no_hooks(cnn)


def test_default_layer_skips_maps_of_one_pixel():
    """A torchvision ResNet-18 at 32 px: layer4's maps are 1×1 (a one-colour heatmap), so the default reads the
    last conv layer with a larger map, layer3.1.conv2 (2×2), and equals Captum there (issue 29, point 4)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).double().eval()
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    ours = xaicore.explain(model, x, target, method="gradcam")
    assert_close(ours, captum_gradcam(model, x, target, "layer3.1.conv2"))
    from xaicore.explain.signal import gradcam_map

    assert gradcam_map(model, x, target, None).shape == (4, 1, 2, 2)
    flat = ours[:, 0].flatten(1)
    alive = flat.amax(1) > 0  # an untrained net may rectify a whole map to 0
    assert int(alive.sum()) >= 3 and bool((flat.amax(1) > flat.amin(1))[alive].all()), "a map is one colour"
    big = torch.rand(2, 3, 64, 64, dtype=torch.float64)  # layer4 is 2×2 there: the last conv layer is read
    assert_close(xaicore.explain(model, big, target[:2], method="gradcam"),
                 captum_gradcam(model, big, target[:2], "layer4.1.conv2"))
