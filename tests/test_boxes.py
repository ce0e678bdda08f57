"""Box metrics for the MTL-MoE regression task, on planted boxes with hand-computed values."""

import pytest
import torch
from torchvision.ops import box_iou

from vipnb.errors import VipnbError
from vipnb.eval.boxes import box_iou_pairs, box_metrics, ciou_pairs

#: identical, disjoint, shifted by half its width (IoU 2/6), half the height (IoU 0.5/1).
PRED = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0],
                     [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
TARGET = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0],
                       [1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 1.0, 0.5]])


def test_iou_of_planted_pairs():
    iou = box_iou_pairs(PRED, TARGET)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 1 / 3, 0.5]))


def test_iou_matches_torchvision_on_random_boxes():
    torch.manual_seed(0)
    corners = torch.rand(2, 10, 2, 2).sort(dim=2).values  # x1 < x2, y1 < y2
    pred, target = (c.reshape(10, 4) for c in corners)  # [box, corner, xy]
    torch.testing.assert_close(box_iou_pairs(pred, target), box_iou(pred, target).diagonal())


def test_complete_iou_of_planted_pairs():
    ciou = ciou_pairs(PRED, TARGET)
    assert ciou[0].item() == pytest.approx(1.0, abs=1e-6)
    # Disjoint: IoU 0, centre distance² 2·2² = 8 over enclosing diagonal² 2·3² = 18.
    assert ciou[1].item() == pytest.approx(-8 / 18, abs=1e-6)
    # Half-shifted squares: IoU 1/3, centres 1 apart, enclosing box 3 × 2, same aspect ratio.
    assert ciou[2].item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)


def test_box_metrics_summarise_the_pairs():
    metrics = box_metrics(PRED, TARGET)
    assert metrics["mean_iou"] == pytest.approx((1 + 0 + 1 / 3 + 0.5) / 4)
    assert metrics["iou50"] == 0.5  # the identical pair and the one at exactly 0.5
    assert metrics["mean_ciou"] == pytest.approx(ciou_pairs(PRED, TARGET).mean().item())


@pytest.mark.parametrize("pred, target", [
    (torch.zeros(3, 4), torch.zeros(2, 4)),
    (torch.zeros(3, 5), torch.zeros(3, 5)),
    (torch.zeros(0, 4), torch.zeros(0, 4)),
])
def test_mismatched_or_empty_boxes_are_named(pred, target):
    with pytest.raises(VipnbError, match=r"shapes"):
        box_metrics(pred, target)
