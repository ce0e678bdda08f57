"""Batched crops (vipnb.data.augment) on the path a GPU run takes."""

import importlib

import torch

from vipnb.data.augment import crop_and_resize

# The module, not the function that `torchvision.ops` exports under the same name.
torchvision_roi_align = importlib.import_module("torchvision.ops.roi_align")


def test_crops_call_the_kernel_not_torchvisions_compiled_fallback(monkeypatch):
    """Under deterministic algorithms on CUDA, `torchvision.ops.roi_align` swaps in a
    torch.compile'd Python version, which stalled the first GPU proof for minutes; a CPU
    takes that branch when torchvision reports no compiled ops, so the test makes it so."""
    batch = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 20.0], [3.0, 2.0, 15.0, 12.0]])
    rois = torch.cat([torch.arange(2.0).unsqueeze(1), boxes], dim=1)
    expected = torchvision_roi_align.roi_align(batch.float(), rois, output_size=8,
                                               spatial_scale=1.0, sampling_ratio=-1,
                                               aligned=True)

    def no_compile(*args, **kwargs):
        raise AssertionError("a crop called torch.compile")

    monkeypatch.setattr(torchvision_roi_align, "_has_ops", lambda: False)
    monkeypatch.setattr(torch, "compile", no_compile)
    torch.testing.assert_close(crop_and_resize(batch, boxes, 8), expected)
