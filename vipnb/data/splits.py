"""Safe reading of the official VIPriors image-classification split files.

The VIPriors toolkit (github.com/VIPriors/vipriors-challenges-toolkit, folder
``image-classification/``) ships its splits as Python pickles:

- ``train.pickle`` and ``val.pickle``: 50 000 ``[wnid, filename]`` pairs each, e.g.
  ``['n01440764', 'n01440764_2823.JPEG']``; both are drawn from ImageNet-2012 *train*
  (the image lives at ``<imagenet>/train/<wnid>/<filename>``).
- ``test.pickle``: 50 000 strings ``'<wnid>/ILSVRC2012_val_<n>.JPEG'`` relative to
  ``<imagenet>/val/``; the list order defines the test image ids ``img_<i>.JPEG``.

``pickle.load`` on a downloaded file can run arbitrary code, so these files are never loaded that
way. :func:`read_split_file` first walks the opcodes and refuses anything that could import or call
(a split file is only lists of strings), then unpickles with an ``Unpickler`` that refuses every
global as a second line of defence, and finally checks the loaded shape.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import pickletools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vipnb.errors import VipnbError

SPLIT_FILE_NAMES = ("train.pickle", "val.pickle", "test.pickle")

TOOLKIT_FOLDER = (
    "the folder image-classification/ of https://github.com/VIPriors/vipriors-challenges-toolkit"
)
REDOWNLOAD_HINT = (
    f"Re-download the official split files (train.pickle, val.pickle, test.pickle) from "
    f"{TOOLKIT_FOLDER}."
)

# Opcodes a split file is made of: framing, marks, the memo, lists/tuples and strings.
_STRING_OPCODES = frozenset(
    "UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8 STRING BINSTRING SHORT_BINSTRING".split()
)
_MEMO_STORE_OPCODES = frozenset("PUT BINPUT LONG_BINPUT MEMOIZE".split())
_STRUCTURE_OPCODES = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK DUP GET BINGET LONG_BINGET "
    "EMPTY_LIST APPEND APPENDS LIST EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3".split()
)
# Plain values that cannot run code. A split file never holds them, but letting them through
# to the shape check gives a better message ("item 3 is 7 (int)") than an opcode name.
_PLAIN_DATA_OPCODES = frozenset(
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 NONE NEWTRUE NEWFALSE FLOAT BINFLOAT "
    "BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 "
    "EMPTY_DICT DICT SETITEM SETITEMS EMPTY_SET ADDITEMS FROZENSET".split()
)
_ALLOWED_OPCODES = _STRING_OPCODES | _MEMO_STORE_OPCODES | _STRUCTURE_OPCODES | _PLAIN_DATA_OPCODES


def _refused(path: Path, what: str) -> VipnbError:
    return VipnbError(
        f"{path}: the pickle tried to {what}, which a split file never needs, so it was refused "
        f"(nothing in it was run). {REDOWNLOAD_HINT}"
    )


def _check_opcodes(path: Path, data: bytes) -> None:
    """Refuse any opcode outside the allow-list before a single object is built."""
    try:
        for opcode, argument, position in pickletools.genops(data):
            if opcode.name not in _ALLOWED_OPCODES:
                raise _refused(path, _what_it_tried(data, opcode.name, argument, position))
    except ValueError as error:  # genops on a truncated or non-pickle file
        raise VipnbError(
            f"{path} is not a readable pickle ({error}). It may be truncated or not a split file. "
            f"{REDOWNLOAD_HINT}"
        ) from None


def _what_it_tried(data: bytes, name: str, argument: object, position: int) -> str:
    """Words for a refused opcode, naming the import where the pickle spells it out."""
    if name in ("GLOBAL", "INST"):
        module, _, attribute = str(argument).partition(" ")
        return f"import {module}.{attribute}"
    if name == "STACK_GLOBAL":
        # Module and name are the two values pushed just before; only hostile files get here,
        # so a second walk to find them costs nothing in normal use.
        recent_pushes: deque[str | None] = deque([None, None], maxlen=2)
        for opcode, value, at in pickletools.genops(data):
            if at >= position:
                break
            if opcode.name in _STRING_OPCODES:
                recent_pushes.append(value if isinstance(value, str) else None)
            elif opcode.name not in _MEMO_STORE_OPCODES and opcode.name not in ("FRAME", "PROTO"):
                recent_pushes.append(None)
        module, attribute = recent_pushes
        return (
            f"import {module}.{attribute}" if module and attribute else "import a module attribute"
        )
    if name in ("EXT1", "EXT2", "EXT4"):
        return "import an object from the copyreg extension registry"
    if name in ("PERSID", "BINPERSID"):
        return "load a persistent (external) object"
    return f"build an object (pickle opcode {name} at byte {position})"


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Second line of defence: refuses every global, so no class or function can be loaded."""

    def __init__(self, file: io.BytesIO, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise _refused(self._path, f"import {module}.{name}")


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _is_pair_of_strings(item: object) -> bool:
    return (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and all(isinstance(part, str) for part in item)
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VipnbError(
            f"Split file {path} does not exist. The official split files (train.pickle, "
            f"val.pickle, test.pickle) come from {TOOLKIT_FOLDER}; put all three in one folder "
            f"and pass that folder."
        ) from None
    except OSError as error:
        raise VipnbError(f"Cannot read split file {path}: {error.strerror}.") from None


def read_split_file(path: str | os.PathLike) -> list:
    """Load one VIPriors split pickle without ever running code from it.

    Returns the list as stored: items are ``str`` (test) or 2-item lists/tuples of ``str``
    (train, val). Raises :class:`~vipnb.errors.VipnbError` for a missing file, a pickle that
    tries to import or call anything, or any other shape.
    """
    path = Path(path)
    return _parse_split_file(path, _read_bytes(path))


def _parse_split_file(path: Path, data: bytes) -> list:
    _check_opcodes(path, data)
    try:
        loaded = _NoGlobalsUnpickler(io.BytesIO(data), path).load()
    except VipnbError:
        raise
    except Exception as error:  # malformed data that still passed the opcode walk
        raise VipnbError(
            f"{path} could not be unpickled ({type(error).__name__}: {error}). {REDOWNLOAD_HINT}"
        ) from None

    if not isinstance(loaded, list):
        raise VipnbError(
            f"{path} holds {_describe(loaded)}, but a split file holds a list of "
            f"[wnid, filename] pairs or of 'wnid/filename' strings. "
            f"{REDOWNLOAD_HINT}"
        )
    for index, item in enumerate(loaded):
        if not (isinstance(item, str) or _is_pair_of_strings(item)):
            raise VipnbError(
                f"{path}: item {index} is {_describe(item)}, but every item of a split file is a "
                f"[wnid, filename] pair or a 'wnid/filename' string. "
                f"{REDOWNLOAD_HINT}"
            )
    return loaded


@dataclass(frozen=True)
class VipriorsSplits:
    """The three official splits. ``test`` order defines the ids ``img_<i>.JPEG``."""

    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[str]

    @property
    def wnids(self) -> list[str]:
        """Sorted class ids; a class's index is its position here (timm's synset order)."""
        return sorted({wnid for wnid, _ in self.train})


def _is_plain_name(name: str) -> bool:
    # Entries become paths under the output folder: one path component, nothing that escapes it.
    return name not in ("", ".", "..") and not ("/" in name or "\\" in name or "\0" in name)


def _pairs(path: Path, entries: list) -> list[tuple[str, str]]:
    pairs = []
    for index, item in enumerate(entries):
        if not _is_pair_of_strings(item):
            raise VipnbError(
                f"{path}: item {index} is {_describe(item)}, but train and val entries are "
                f"[wnid, filename] pairs. Are the split files swapped? {REDOWNLOAD_HINT}"
            )
        wnid, filename = item
        if not (_is_plain_name(wnid) and _is_plain_name(filename)):
            raise VipnbError(
                f"{path}: item {index} is {_describe(item)}; wnid and filename must each be a "
                f"single file name (no '/', '\\' or '..'). {REDOWNLOAD_HINT}"
            )
        pairs.append((wnid, filename))
    return pairs


def _test_paths(path: Path, entries: list) -> list[str]:
    for index, item in enumerate(entries):
        parts = item.split("/") if isinstance(item, str) else []
        if len(parts) != 2 or not all(_is_plain_name(part) for part in parts):
            raise VipnbError(
                f"{path}: item {index} is {_describe(item)}, but test entries are "
                f"'wnid/ILSVRC2012_val_<n>.JPEG' strings. Are the split files swapped? "
                f"{REDOWNLOAD_HINT}"
            )
    return list(entries)


def load_vipriors_splits(splits_dir: str | os.PathLike) -> VipriorsSplits:
    """Read ``train.pickle``, ``val.pickle`` and ``test.pickle`` from ``splits_dir`` and check them.

    Checks that train/val are pairs, test are ``wnid/file`` strings, train and val cover the same
    classes and share no entry, and every test class is a train class. Returns fresh lists on
    every call.
    """
    paths = [Path(splits_dir) / name for name in SPLIT_FILE_NAMES]
    checked = _checked_splits(*((path, _read_bytes(path)) for path in paths))
    return VipriorsSplits(list(checked.train), list(checked.val), list(checked.test))


# Checking 150 000 entries takes about a second, and a notebook or the builder reads the same files
# again and again; results are kept by file content, so an edited file is checked afresh.
@functools.lru_cache(maxsize=4)
def _checked_splits(
    train: tuple[Path, bytes], val: tuple[Path, bytes], test: tuple[Path, bytes]
) -> VipriorsSplits:
    (train_path, _), (val_path, _), (test_path, _) = train, val, test
    splits = VipriorsSplits(
        train=_pairs(train_path, _parse_split_file(*train)),
        val=_pairs(val_path, _parse_split_file(*val)),
        test=_test_paths(test_path, _parse_split_file(*test)),
    )

    train_wnids = {wnid for wnid, _ in splits.train}
    val_wnids = {wnid for wnid, _ in splits.val}
    if train_wnids != val_wnids:
        only_train = sorted(train_wnids - val_wnids)[:5]
        only_val = sorted(val_wnids - train_wnids)[:5]
        raise VipnbError(
            f"{train_path} and {val_path} cover different classes ({len(train_wnids)} vs "
            f"{len(val_wnids)}; only in train: {only_train}, only in val: {only_val}). They must "
            f"come from the same release. {REDOWNLOAD_HINT}"
        )
    _check_disjoint(train, val, splits)
    unknown = sorted(set(test_labels(splits.test)) - train_wnids)
    if unknown:
        raise VipnbError(
            f"{test_path} has {len(unknown)} classes that train.pickle lacks (e.g. {unknown[:5]}). "
            f"The split files must come from the same release. {REDOWNLOAD_HINT}"
        )
    return splits


def _check_disjoint(train: tuple[Path, bytes], val: tuple[Path, bytes],
                    splits: VipriorsSplits) -> None:
    """The official train and val splits share no image; shared ones would leak val into train."""
    shared = set(splits.train) & set(splits.val)
    if not shared:
        return
    same = " (the two files are identical)" if train[1] == val[1] else ""
    entries = "entry" if len(shared) == 1 else "entries"
    raise VipnbError(
        f"{train[0]} and {val[0]} share {len(shared)} {entries}{same}, e.g. {sorted(shared)[0]}; "
        f"the official train and val splits share none, so training would see validation "
        f"images. Pass the toolkit's own train.pickle and val.pickle. {REDOWNLOAD_HINT}"
    )


def test_labels(test_entries: Sequence[str]) -> list[str]:
    """The wnid of each test entry: the folder part of ``'wnid/ILSVRC2012_val_<n>.JPEG'``."""
    labels = []
    for index, entry in enumerate(test_entries):
        wnid, separator, _ = entry.partition("/")
        if not separator or not wnid:
            raise VipnbError(
                f"Test entry {index} is {entry!r}; expected 'wnid/ILSVRC2012_val_<n>.JPEG'."
            )
        labels.append(wnid)
    return labels


# pytest collects module-level functions named test_* from imported modules; this is not a test.
test_labels.__test__ = False  # type: ignore[attr-defined]
