"""MTL-MoE (poster Fig. 2/6): backbone, condense layer, gated experts, classification and box
towers, the integrated loss and the transfer-learning settings."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss

from vipnb.errors import VipnbError
from vipnb.models.mtl_moe import (
    MtlMoE,
    freeze_for_transfer,
    mtl_loss,
    replace_classifier,
)

TARGET_BOXES = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.3, 0.3, 0.5, 0.8]])


def tiny_model(**kwargs) -> MtlMoE:
    torch.manual_seed(0)
    settings = {"num_classes": 5, "condense_dim": 16, "expert_dim": 12, "tower_hidden": 8,
                **kwargs}
    return MtlMoE("resnet10t", **settings)


def images(batch=2):
    torch.manual_seed(1)
    return torch.randn(batch, 3, 32, 32)


def test_shapes_of_the_two_task_model():
    model = tiny_model()
    out = model(images())
    assert out.logits.shape == (2, 5) and out.boxes.shape == (2, 4)
    assert out.aux_loss.ndim == 0
    assert set(out.gates) == {"classify", "box"}
    for gates in out.gates.values():
        assert gates.shape == (2, 3) and ((gates > 0).sum(1) == 2).all()
    assert len(model.moe.gates) == 2 and len(model.moe.experts) == 3


def test_predicted_boxes_are_valid_even_near_the_border():
    model = tiny_model().eval()
    head = model.towers["box"].mlp[-1]
    for bias in ([0.0, 0.0, 0.0, 0.0], [3.0, -3.0, 2.0, 2.0], [-4.0, 4.0, -1.0, 3.0]):
        with torch.no_grad():
            head.bias.copy_(torch.tensor(bias))
        boxes = model(images(4)).boxes
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()


def test_loss_is_the_sum_of_its_parts_and_trains_every_part():
    model = tiny_model().train()
    out = model(images())
    labels = torch.tensor([1, 4])
    total, parts = mtl_loss(out, labels, TARGET_BOXES, box_weight=2.0, label_smoothing=0.1)
    assert set(parts) == {"ce", "box", "aux", "total"}
    ce = F.cross_entropy(out.logits, labels, label_smoothing=0.1).item()
    box = complete_box_iou_loss(out.boxes, TARGET_BOXES, reduction="mean").item()
    assert parts["ce"] == pytest.approx(ce) and parts["box"] == pytest.approx(box)
    assert parts["total"] == pytest.approx(ce + 2.0 * box + parts["aux"])
    assert total.item() == pytest.approx(parts["total"])
    assert model.loss(out, labels, TARGET_BOXES, 2.0, 0.1)[1] == parts
    total.backward()
    for module in (model.backbone, model.condense, model.towers["box"], model.moe.gates[1]):
        assert any(p.grad is not None and p.grad.any() for p in module.parameters())


def test_box_model_needs_target_boxes():
    model = tiny_model()
    with pytest.raises(VipnbError, match="target boxes"):
        mtl_loss(model(images()), torch.tensor([0, 1]))


def test_single_task_model_has_no_box_head():
    model = tiny_model(tasks=("classify",))
    assert "box" not in model.towers and len(model.moe.gates) == 1
    out = model(images())
    assert out.boxes is None and set(out.gates) == {"classify"}
    total, parts = mtl_loss(out, torch.tensor([0, 1]), TARGET_BOXES)
    assert set(parts) == {"ce", "aux", "total"}


def test_one_expert_model_has_no_auxiliary_loss():
    out = tiny_model(num_experts=1, k=1).train()(images())
    assert out.aux_loss.item() == 0.0 and out.gates["box"].shape == (2, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ("box",)}, "tasks="),
    ({"tasks": ("classify", "segment")}, "tasks="),
    ({"num_experts": 1}, "k=2 with num_experts=1"),
    ({"num_classes": 0}, "num_classes=0"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(VipnbError, match=message):
        tiny_model(**kwargs)


def test_unknown_backbone_is_named():
    with pytest.raises(VipnbError, match="no_such_net"):
        MtlMoE("no_such_net", num_classes=3)


def frozen_names(model):
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def test_freezing_experts_freezes_exactly_the_experts_and_the_condense_layer():
    model = freeze_for_transfer(tiny_model(), "experts")
    expected = {name for name, _ in model.named_parameters()
                if name.startswith(("moe.experts.", "condense."))}
    assert expected and frozen_names(model) == expected
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model.train()
    total, _ = mtl_loss(model(images()), torch.tensor([1, 2]), TARGET_BOXES)
    total.backward()
    optimizer.step()
    params = dict(model.named_parameters())
    for name in expected:
        assert torch.equal(params[name], frozen[name]), name
    changed = [name for name in frozen if not torch.equal(params[name], frozen[name])]
    assert any(name.startswith("backbone.") for name in changed)
    assert any(name.startswith("towers.") for name in changed)
    assert any(name.startswith("moe.gates.") for name in changed)


def test_setting_none_fine_tunes_everything_again():
    model = freeze_for_transfer(tiny_model(), "experts")
    assert not frozen_names(freeze_for_transfer(model, "none"))


def test_unknown_transfer_setting_is_named():
    with pytest.raises(VipnbError, match="'towers'.*none, experts"):
        freeze_for_transfer(tiny_model(), "towers")


def test_replace_classifier_changes_the_number_of_classes():
    model = tiny_model()
    old = model.towers["classify"][-1]
    replace_classifier(model, 7)
    new = model.towers["classify"][-1]
    assert new is not old and new.in_features == old.in_features
    assert model(images()).logits.shape == (2, 7)
