"""The streaming path, for data that does not fit in memory: DataLoader workers decode
images to fixed-size uint8 tensors, and the same batched transforms as the cache path run
on the training device."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from vipnb.data.decode import decode_image
from vipnb.data.layout import ImageList


class DecodingDataset(Dataset):
    def __init__(self, images: ImageList, size: int, interpolation: str):
        self.images, self.size, self.interpolation = images, size, interpolation

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = decode_image(self.images.paths[index], self.size, self.interpolation)
        return torch.from_numpy(array), int(self.images.labels[index])


def stream_batches(images: ImageList, size: int, interpolation: str, order: torch.Tensor,
                   batch_size: int, workers: int):
    """uint8 [B, 3, S, S] batches and their labels, in the given sample order."""
    loader = DataLoader(DecodingDataset(images, size, interpolation), batch_size=batch_size,
                        sampler=order.tolist(), num_workers=workers,
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    yield from loader
