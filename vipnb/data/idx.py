"""Reader for the IDX format (gzip-compressed) in which MNIST and Fashion-MNIST are shipped."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from vipnb.errors import VipnbError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a numpy array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise VipnbError(f"IDX file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise VipnbError(f"cannot read IDX file {path}: {e}; the download may be truncated") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise VipnbError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise VipnbError(f"{path}: header says shape {shape} but holds {array.size} values")
    return array.reshape(shape)
