"""WordNet names for the inner nodes of a class hierarchy over ImageNet-style classes (wnids
such as "n01440764"), as NBDT labels its induced hierarchies: a node is named by the lowest
common hypernym of its classes' noun synsets.

nltk is optional (not a project dependency) and nothing is ever downloaded. WordNet is looked
up, in order, where nltk finds its `corpora/wordnet` (nltk.data.path), then as a plain WordNet
3.0 database directory: $WNSEARCHDIR, then /usr/share/wordnet (Debian/Ubuntu's `wordnet-base`
package; its `index.sense` comes from `wordnet-sense-index`, which is not needed here).
`wordnet_database_dir` is that directory lookup, shared with the training task's WordNet class
hierarchy (vipnb.losses.wordnet_hierarchy, which reads no environment itself).
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from vipnb.errors import VipnbError
from vipnb.losses.tree import Hierarchy

WNID = re.compile(r"n\d{8}")
SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet",)

# nltk's reader insists on a `lexnames` file, which Debian's wordnet-base does not ship (only its
# man page). These are WordNet 3.0's lexicographer files (index, name, part of speech); nltk
# only uses them for Synset.lexname().
_LEXNAMES = [
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2),
    ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
]


def wordnet_node_names(hierarchy: Hierarchy, wnids: Sequence[str]) -> dict[int, str] | None:
    """Inner node id -> first lemma of the lowest common hypernym of its classes' synsets.

    None (never an error) when the classes are not all wnids (e.g. fashion50's names), nltk is
    not installed, or no local WordNet is found.
    """
    if len(wnids) != hierarchy.num_classes:
        raise VipnbError(f"wordnet_node_names got {len(wnids)} wnids for a hierarchy of "
                         f"{hierarchy.num_classes} classes; pass one wnid per class, in order.")
    if not all(isinstance(w, str) and WNID.fullmatch(w) for w in wnids):
        return None
    wordnet = _load_wordnet()
    if wordnet is None:
        return None
    synsets = {}
    for c, wnid in enumerate(wnids):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns, then returns None, on a bad offset
            try:
                synsets[c] = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
            except (LookupError, ValueError, OSError):
                return None
        if synsets[c] is None:
            return None
    # Children before parents, so each node folds its children's hypernyms rather than all its
    # leaves (one fold per child, not per leaf); where hypernyms form a tree, as for nearly all
    # nouns, both give the same synset.
    names = {}
    for node in _bottom_up(hierarchy):
        common = synsets[hierarchy.children[node][0]]
        for child in hierarchy.children[node][1:]:
            # Several at equal depth are rare; nltk returns them sorted, so the pick is stable.
            common = common.lowest_common_hypernyms(synsets[child])[0]
        synsets[node] = common
        names[node] = common.lemma_names()[0].replace("_", " ")
    return names


def _bottom_up(hierarchy: Hierarchy) -> list[int]:
    order, stack = [], [hierarchy.root]
    while stack:
        node = stack.pop()
        if node in hierarchy.children:
            order.append(node)
            stack.extend(hierarchy.children[node])
    return order[::-1]


@functools.lru_cache(maxsize=1)
def _load_wordnet():
    """nltk's WordNet reader, or None; cached because reading the indices takes seconds."""
    try:
        import nltk.data
        from nltk.corpus import wordnet
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        return None
    try:
        wordnet.ensure_loaded()
        return wordnet
    except LookupError:  # nltk's own data path has no wordnet: try plain database dirs
        pass
    directory = wordnet_database_dir()
    if directory is None:
        return None
    # Recent nltk (3.10) only opens corpus files under nltk.data.path (its path sandbox), on
    # every read, not just here: authorise the directory the way nltk documents.
    if directory not in nltk.data.path:
        nltk.data.path.append(directory)
    return _database_reader(WordNetCorpusReader, directory)


def wordnet_database_dir() -> str | None:
    """The first plain WordNet 3.0 database directory (one holding data.noun): $WNSEARCHDIR,
    WordNet's own variable, then the system's (Debian's wordnet-base); None if there is none."""
    for directory in (os.environ.get("WNSEARCHDIR"), *SYSTEM_WORDNET_DIRS):
        if directory and (Path(directory) / "data.noun").is_file():
            return directory
    return None


def _database_reader(reader_class, directory: str):
    """A WordNetCorpusReader over a WordNet database dir that may lack `lexnames`."""
    has_lexnames = (Path(directory) / "lexnames").is_file()

    class DatabaseReader(reader_class):
        def open(self, file):
            if file == "lexnames" and not has_lexnames:
                return io.StringIO("".join(f"{i:02d}\t{name}\t{pos}\n"
                                           for i, (name, pos) in enumerate(_LEXNAMES)))
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # Recent nltk (3.10) maps this database onto its own downloaded `wordnet` for OMW
            # (multilingual) lookups, which we never make, and fails when that is absent.
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": no OMW
        try:
            return DatabaseReader(directory, None)
        except (LookupError, OSError, ValueError):  # PermissionError is an OSError
            return None
