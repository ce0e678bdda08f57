"""MoCo v2 on tiny backbones: momentum rule, queue, InfoNCE, shuffle BN; its augmentation
against torchvision's per-image ops; the kNN monitor."""

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from vipnb.data.augment import crop_and_resize, normalize, random_resized_crop_boxes
from vipnb.ssl import MoCo, TwoCropTransform, knn_top1
from vipnb.ssl.moco import adjust_hue, color_jitter, gaussian_blur

FEATURES = 16


def tiny_backbone(batch_norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(FEATURES) if batch_norm else nn.Identity()
    return nn.Sequential(nn.Conv2d(3, FEATURES, 3, padding=1), norm, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def tiny_moco(batch_norm: bool = True, **kwargs) -> MoCo:
    kwargs = {"dim": 8, "queue_size": 20, "momentum": 0.9, **kwargs}
    return MoCo(tiny_backbone(batch_norm), FEATURES, **kwargs)


def views(n: int = 8, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, n, 3, size, size, generator=generator).unbind(0)


def sgd_step(model: MoCo, view_q, view_k, lr: float = 0.1) -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss = model(view_q, view_k)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def test_key_encoder_starts_equal_and_is_frozen():
    model = tiny_moco()
    for p_q, p_k in zip(model.encoder_q.parameters(), model.encoder_k.parameters(), strict=True):
        assert torch.equal(p_q, p_k) and p_q.data_ptr() != p_k.data_ptr()
        assert p_q.requires_grad and not p_k.requires_grad
    assert model.queue.shape == (8, 20)
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(20))
    assert int(model.queue_ptr) == 0
    assert isinstance(model.encoder_q.head, nn.Sequential)  # v2 MLP head
    assert isinstance(tiny_moco(mlp=False).encoder_q.head, nn.Linear)


def test_momentum_update_uses_current_query_weights_before_the_keys():
    model = tiny_moco(bn_groups=1)
    view_q, view_k = views()
    sgd_step(model, view_q, view_k)  # query moves away from key
    q_now = [p.detach().clone() for p in model.encoder_q.parameters()]
    k_old = [p.detach().clone() for p in model.encoder_k.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(q_now, k_old, strict=True))
    sgd_step(model, view_q, view_k)
    for k_new, k, q in zip(model.encoder_k.parameters(), k_old, q_now, strict=True):
        torch.testing.assert_close(k_new, 0.9 * k + 0.1 * q)
    with torch.no_grad():  # the keys of the second step came from the updated key encoder
        keys = F.normalize(model.encoder_k(view_k), dim=1)
    torch.testing.assert_close(model.queue[:, 8:16].T, keys)


def test_momentum_update_copies_buffers():
    model = tiny_moco()
    model.encoder_q(views()[0])  # moves the query's BN running statistics
    model.momentum_update()
    for b_q, b_k in zip(model.encoder_q.buffers(), model.encoder_k.buffers(), strict=True):
        assert torch.equal(b_q, b_k)


def test_only_the_query_encoder_gets_gradients():
    model = tiny_moco()
    model(*views()).backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert all(p.grad is not None for p in model.encoder_q.parameters())


def test_queue_pointer_wraps_and_keys_are_the_key_encoders_output():
    model = tiny_moco()  # queue 20, batch 8: pointer 8, 16, then 4 after wrapping
    for step, expected_ptr in enumerate([8, 16, 4]):
        view_q, view_k = views(seed=step)
        before = model.queue.clone()
        torch.manual_seed(step)
        model(view_q, view_k)
        assert int(model.queue_ptr) == expected_ptr
        # Shuffle BN: the key encoder saw the permuted batch in two groups of four.
        torch.manual_seed(step)
        perm = torch.randperm(8)
        with torch.no_grad():
            keys = torch.cat([model.encoder_k(half) for half in view_k[perm].chunk(2)])
        keys = F.normalize(keys[torch.argsort(perm)], dim=1)
        slots = (torch.arange(8) + 8 * step) % 20
        torch.testing.assert_close(model.queue[:, slots].T, keys)
        torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(20))
        untouched = torch.ones(20, dtype=torch.bool)
        untouched[slots] = False
        assert torch.equal(model.queue[:, untouched], before[:, untouched])


def test_shuffle_bn_changes_keys_and_one_group_does_not():
    view_q, view_k = views()
    torch.manual_seed(0)
    grouped = tiny_moco(bn_groups=2)
    grouped(view_q, view_k)
    single = tiny_moco(bn_groups=1)
    single(view_q, view_k)
    with torch.no_grad():
        plain = F.normalize(single.encoder_k(view_k), dim=1)
    torch.testing.assert_close(single.queue[:, :8].T, plain)
    assert not torch.allclose(grouped.queue[:, :8].T, plain, atol=1e-3)


def test_loss_is_infonce_over_positive_and_queue():
    model = tiny_moco(batch_norm=False, temperature=0.2)
    view_q, view_k = views()
    queue = F.normalize(torch.randn(8, 20, generator=torch.Generator().manual_seed(3)), dim=0)
    model.queue.copy_(queue)
    with torch.no_grad():  # before any step the key encoder equals the query encoder
        q = F.normalize(model.encoder_q(view_q), dim=1)
        k = F.normalize(model.encoder_q(view_k), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.2
    expected = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    torch.testing.assert_close(model(view_q, view_k), expected)


def test_optimisation_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0)
    model = MoCo(backbone, backbone.num_features, dim=32, queue_size=256)
    view_q, view_k = views(n=8, size=32)
    queue = model.queue.clone()  # fixed negatives, so the losses compare
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        model.queue.copy_(queue)
        loss = model(view_q, view_k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_backbone_state_dict_loads_into_a_classifier():
    torch.manual_seed(0)
    model = MoCo(timm.create_model("resnet18", num_classes=0), 512, queue_size=64)
    classifier = timm.create_model("resnet18", num_classes=5)
    result = classifier.load_state_dict(model.backbone_state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    assert torch.equal(classifier.conv1.weight, model.encoder_q.backbone.conv1.weight)


# --- augmentation ---------------------------------------------------------------------------

def uint8_batch(n: int = 4, size: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)


def test_two_views_shape_difference_and_reproducibility():
    batch = uint8_batch()
    transform = TwoCropTransform(16)
    view_q, view_k = transform(batch, torch.Generator().manual_seed(5))
    assert view_q.shape == view_k.shape == (4, 3, 16, 16)
    assert view_q.dtype == view_k.dtype == torch.float32
    assert not torch.allclose(view_q, view_k)
    again = transform(batch, torch.Generator().manual_seed(5))
    assert torch.equal(again[0], view_q) and torch.equal(again[1], view_k)
    other = transform(batch, torch.Generator().manual_seed(6))
    assert not torch.equal(other[0], view_q)


def test_without_colour_blur_and_flip_it_is_crop_and_normalise():
    batch = uint8_batch()
    transform = TwoCropTransform(16, jitter_p=0, grayscale_p=0, blur_p=0, hflip=0)
    view_q, view_k = transform(batch, torch.Generator().manual_seed(5))
    boxes = random_resized_crop_boxes(8, 24, 24, (0.2, 1.0), (3 / 4, 4 / 3),
                                      torch.Generator().manual_seed(5))
    crops = normalize(crop_and_resize(torch.cat([batch, batch]), boxes, 16),
                      transform.mean, transform.std)
    assert torch.equal(torch.cat([view_q, view_k]), crops)


def test_grayscale_always_gives_equal_channels():
    transform = TwoCropTransform(16, grayscale_p=1.0)
    mean = torch.tensor(transform.mean).view(1, 3, 1, 1)
    std = torch.tensor(transform.std).view(1, 3, 1, 1)
    for view in transform(uint8_batch(), torch.Generator().manual_seed(0)):
        pixels = view * std + mean
        torch.testing.assert_close(pixels[:, 0], pixels[:, 1])
        torch.testing.assert_close(pixels[:, 1], pixels[:, 2])


def test_colour_jitter_matches_torchvision_per_image():
    images = uint8_batch(n=6, size=10).float()
    generator = torch.Generator().manual_seed(2)
    factors = torch.cat([0.6 + 0.8 * torch.rand(6, 3, generator=generator),
                         -0.1 + 0.2 * torch.rand(6, 1, generator=generator)], dim=1)
    order = torch.rand(6, 4, generator=generator).argsort(dim=1)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    expected = []
    for image, factor, image_order in zip(images / 255, factors, order, strict=True):
        for op in image_order.tolist():
            image = ops[op](image, factor[op].item())
        expected.append(image)
    torch.testing.assert_close(color_jitter(images, factors, order) / 255,
                               torch.stack(expected), atol=1e-5, rtol=0)


def test_hue_matches_torchvision_on_every_hue_sector():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    images[:, :, 0, 0] = 0.5  # a grey pixel
    shifts = torch.tensor([-0.5, -0.3, -0.1, 0.0, 0.2, 0.45])
    expected = torch.stack([TF.adjust_hue(image, shift.item())
                            for image, shift in zip(images, shifts, strict=True)])
    torch.testing.assert_close(adjust_hue(images * 255, shifts) / 255, expected,
                               atol=1e-5, rtol=0)


def test_blur_matches_torchvision_per_image():
    images = uint8_batch(n=3, size=12).float()
    sigma = torch.tensor([0.1, 0.8, 2.0])
    expected = torch.stack([TF.gaussian_blur(image, [5, 5], [s.item(), s.item()])
                            for image, s in zip(images, sigma, strict=True)])
    torch.testing.assert_close(gaussian_blur(images, sigma, 5), expected)
    assert TwoCropTransform(224).blur_kernel_size == 23
    assert TwoCropTransform(32).blur_kernel_size == 3


# --- kNN monitor ------------------------------------------------------------------------------

def clustered(centres: torch.Tensor, n_per_class: int, generator: torch.Generator):
    labels = torch.arange(len(centres)).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), 32, generator=generator), labels


def test_knn_separates_clusters_and_is_chance_on_shuffled_labels():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 32, generator=generator) * 5
    train, train_labels = clustered(centres, 50, generator)
    query, query_labels = clustered(centres, 30, generator)
    assert knn_top1(train, train_labels, query, query_labels) == 1.0
    assert knn_top1(train, train_labels, query, query_labels, k=1000) == 1.0  # k > n_train
    shuffled = train_labels[torch.randperm(len(train_labels), generator=generator)]
    assert knn_top1(train, shuffled, query, query_labels) == pytest.approx(0.1, abs=0.07)
