"""VIPF §3.2's semantic class tree from WordNet (vipnb.losses.wordnet_hierarchy): the data.noun
parser, NBDT's first-hypernym paths merged and collapsed, the `hierarchy: wordnet` recipe key,
and training with it. The databases are small generated data.noun files in WordNet 3.0's
wndb(5) format, but one test, which reads Debian's wordnet-base over the 1000 VIPriors classes."""

from pathlib import Path

import pytest
import torch
from conftest import SPLITS_DIR, make_tree, tiny_recipe

from vipnb.data.sources import load_run_data
from vipnb.data.splits import load_vipriors_splits
from vipnb.engine import load_recipe, train
from vipnb.engine.tasks.classify import ClassifyTask
from vipnb.errors import VipnbError
from vipnb.losses.wordnet_hierarchy import (
    NounDatabase,
    parse_synset_line,
    wordnet_hierarchy,
    wordnet_tree,
)

# name: (words, pointers as (symbol, name)); file order is kept. `dog` lists domestic_animal
# first, as no real line does, so that NBDT's rule (the hypernym whose name sorts first:
# canine) and the file's first differ.
SYNSETS = {
    "entity": (["entity"], [("~", "physical_entity")]),
    "physical_entity": (["physical_entity"], [("@", "entity")]),
    "animal": (["animal", "animate_being"], [("@", "physical_entity"), ("~", "canine")]),
    "domestic_animal": (["domestic_animal"], [("@", "animal")]),
    "canine": (["canine", "canid"], [("@", "animal")]),
    "dog": (["dog", "domestic_dog", "Canis_familiaris"],
            [("@", "domestic_animal"), ("@", "canine"), ("#m", "canine"), ("~", "beagle")]),
    "toy_dog": (["toy_dog", "toy"], [("@", "dog")]),
    "chihuahua": (["Chihuahua"], [("@", "toy_dog")]),
    "beagle": (["beagle"], [("@", "dog")]),
    "wolf": (["wolf"], [("@", "canine")]),
    "lassie": (["Lassie"], [("@i", "dog")]),  # an instance: `@i` only
    "feline": (["feline", "felid"], [("@", "animal")]),
    "tabby": (["tabby", "tabby_cat"], [("@", "feline")]),
    "artifact": (["artifact"], [("@", "physical_entity")]),
    "vehicle": (["vehicle"], [("@", "artifact")]),
    "car": (["car", "auto"], [("@", "vehicle"), ("+", "vehicle")]),
}
LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"


def write_database(directory: Path) -> dict[str, str]:
    """data.noun for SYNSETS, each synset at its line's byte offset (wndb(5)); → name: wnid."""
    directory.mkdir(parents=True, exist_ok=True)

    def line(name: str, offsets: dict[str, int]) -> str:
        words, pointers = SYNSETS[name]
        lemmas = " ".join(f"{word} 0" for word in words)
        # a `+` (derivation) pointer goes to a verb: only noun hypernyms are read
        refs = "".join(f" {symbol} {offsets[target]:08d} {'v' if symbol == '+' else 'n'} 0000"
                       for symbol, target in pointers)
        return (f"{offsets[name]:08d} 05 n {len(words):02x} {lemmas} {len(pointers):03d}{refs}"
                f" | a gloss of {name}; \"an example\"  \n")

    # Offsets are 8 digits wide, so a line's length does not depend on them.
    offsets, at = {}, len(LICENSE.encode())
    for name in SYNSETS:
        offsets[name] = at
        at += len(line(name, dict.fromkeys(SYNSETS, 0)).encode())
    (directory / "data.noun").write_bytes(
        (LICENSE + "".join(line(name, offsets) for name in SYNSETS)).encode())
    return {name: f"n{offset:08d}" for name, offset in offsets.items()}


@pytest.fixture
def database(tmp_path) -> tuple[Path, dict[str, str]]:
    return tmp_path / "wordnet", write_database(tmp_path / "wordnet")


def test_a_data_noun_line_gives_its_words_and_noun_hypernyms():
    synset = parse_synset_line(
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 004 @ 02083346 n 0000 "
        "@ 01317541 n 0000 #m 02083863 n 0000 ~ 01322604 n 0000 | a member of the genus "
        "Canis; \"the dog barked all night\"  \n")
    assert synset.offset == 2084071
    assert synset.words == ("dog", "domestic_dog", "Canis_familiaris")
    assert synset.hypernyms == (2083346, 1317541) and synset.instance_hypernyms == ()
    # w_cnt is hexadecimal: 0b = 11 words
    many = parse_synset_line("00000001 05 n 0b " + " ".join(f"w{k} 0" for k in range(11))
                             + " 001 @i 00000002 n 0000 | many words  \n")
    assert len(many.words) == 11 and many.instance_hypernyms == (2,)
    with pytest.raises(VipnbError, match="wndb"):
        parse_synset_line("  1 This software and database is being provided to you")


def test_paths_climb_nbdts_first_hypernym_and_instance_hypernyms(database):
    directory, wnid = database
    db = NounDatabase(directory)
    offset = {name: int(w[1:]) for name, w in wnid.items()}

    def path(name):
        return [db.synset(o).words[0] for o in db.path_to_root(offset[name])]

    # dog's file lists domestic_animal first; nltk sorts hypernyms by name, NBDT takes [0]
    assert path("chihuahua") == ["Chihuahua", "toy_dog", "dog", "canine", "animal",
                                 "physical_entity", "entity"]
    assert db.synset(offset["dog"]).hypernyms == (offset["domestic_animal"], offset["canine"])
    assert path("lassie")[:2] == ["Lassie", "dog"]  # `@i` when there is no `@`
    assert path("car") == ["car", "vehicle", "artifact", "physical_entity", "entity"]
    assert db.parent(offset["entity"]) is None


def test_the_merged_tree_groups_dogs_then_canines_then_animals_apart_from_the_car(database):
    directory, wnid = database
    names = ["car", "tabby", "beagle", "wolf", "chihuahua"]
    tree = wordnet_tree([wnid[n] for n in names], directory)
    h = tree.hierarchy
    assert h.num_classes == 5
    # single-child chains collapse: entity, toy_dog, feline, vehicle, artifact leave no node
    assert h.to_nested() == [0, [1, [[2, 4], 3]]]
    by_name = {name: set(h.leaves[node]) for node, name in tree.names.items()}
    assert by_name == {"dog": {2, 4}, "canine": {2, 3, 4}, "animal": {1, 2, 3, 4},
                       "physical entity": {0, 1, 2, 3, 4}}
    # with the file's first hypernym, the wolf would leave the dogs' group (dog under
    # domestic_animal), so canine holds exactly the dogs and the wolf only by NBDT's rule
    assert h.smallest_subtree([2, 3]) == (2, 3, 4)
    assert h.describe(names).splitlines()[0] == "node 8 (5 classes)"


def test_an_instance_and_a_class_that_is_anothers_hypernym_are_leaves(database):
    directory, wnid = database
    h = wordnet_hierarchy([wnid["dog"], wnid["beagle"], wnid["lassie"], wnid["tabby"]],
                          directory)
    assert h.to_nested() == [[0, 1, 2], 3]  # dog itself beside its hyponyms and its instance


def test_bad_classes_and_databases_are_refused_by_name(database, tmp_path):
    directory, wnid = database
    with pytest.raises(VipnbError, match="'a_cls' is not a WordNet noun id"):
        wordnet_hierarchy([wnid["dog"], "a_cls"], directory)
    with pytest.raises(VipnbError, match="more than once"):
        wordnet_hierarchy([wnid["dog"], wnid["dog"]], directory)
    with pytest.raises(VipnbError, match="n00000003 is not a noun synset"):
        wordnet_hierarchy([wnid["dog"], "n00000003"], directory)
    with pytest.raises(VipnbError, match="wordnet-base"):
        wordnet_hierarchy([wnid["dog"]], tmp_path / "nowhere")


SYSTEM_WORDNET = Path("/usr/share/wordnet")  # Debian's wordnet-base; `make setup` installs it


@pytest.mark.skipif(not (SYSTEM_WORDNET / "data.noun").is_file()
                    or not (SPLITS_DIR / "train.pickle").is_file(),
                    reason="needs Debian's wordnet-base and the official VIPriors split files")
def test_the_real_wordnet_tree_over_the_1000_vipriors_classes_has_the_papers_superclasses():
    # §3.2: parents are "superclasses such as animal, vehicle"; ImageNet's classes 0-397 are
    # its animals and 151-268 its dogs
    wnids = load_vipriors_splits(SPLITS_DIR).wnids
    tree = wordnet_tree(wnids, SYSTEM_WORDNET)
    hierarchy = tree.hierarchy
    assert hierarchy.num_classes == 1000
    assert min(len(children) for children in hierarchy.children.values()) >= 2
    node = {name: n for n, name in tree.names.items()}
    assert set(hierarchy.leaves[node["animal"]]) == set(range(398))
    assert set(hierarchy.leaves[node["dog"]]) == set(range(151, 269))
    # airliner, canoe, space shuttle, submarine; not the wheeled vehicles: nltk sorts their
    # hypernyms by name, `container` before `vehicle`, and NBDT's tree takes the first
    vehicles = {wnids.index(w) for w in ("n02690373", "n02951358", "n04266014", "n04347754")}
    assert vehicles <= set(hierarchy.leaves[node["vehicle"]])
    assert wnids.index("n02701002") not in hierarchy.leaves[node["vehicle"]]  # ambulance


# -- the recipe key and training ---------------------------------------------------------------

def test_hierarchy_key_is_hashed_only_when_set_and_refused_where_unread(tmp_path, database):
    directory, _ = database
    plain = tiny_recipe(tmp_path)
    assert tiny_recipe(tmp_path, hierarchy="induced").digest() == plain.digest()  # no run renamed
    wordnet = tiny_recipe(tmp_path, hierarchy="wordnet", tree_loss_weight=1.0)
    assert wordnet.digest() != tiny_recipe(tmp_path, tree_loss_weight=1.0).digest()
    # where WordNet lies changes no number
    assert tiny_recipe(tmp_path, hierarchy="wordnet", tree_loss_weight=1.0,
                       wordnet_dir=str(directory)).digest() == wordnet.digest()
    with pytest.raises(VipnbError, match="hierarchy='semantic' is not one of induced, wordnet"):
        tiny_recipe(tmp_path, hierarchy="semantic")
    with pytest.raises(VipnbError, match="hierarchy_from: '' or hierarchy: induced"):
        tiny_recipe(tmp_path, hierarchy="wordnet", tree_loss_weight=1.0, hierarchy_from="other")
    with pytest.raises(VipnbError, match="only tree_loss_weight > 0 reads it"):
        tiny_recipe(tmp_path, hierarchy="wordnet")


def test_training_with_the_wordnet_tree_adds_its_term(tmp_path, database):
    directory, wnid = database
    tree = make_tree(tmp_path / "wnids", classes=tuple(sorted(
        wnid[n] for n in ("beagle", "chihuahua", "tabby"))))
    recipe = tiny_recipe(tree, hierarchy="wordnet", tree_loss_weight=1.0,
                         wordnet_dir=str(directory))
    task = ClassifyTask(recipe, load_run_data(recipe), torch.device("cpu"), None)
    by_wnid = {w: c for c, w in enumerate(task.data.classes)}
    dogs = sorted(by_wnid[wnid[n]] for n in ("beagle", "chihuahua"))
    assert task._hierarchy(None).to_nested() in ([dogs, by_wnid[wnid["tabby"]]],
                                                 [by_wnid[wnid["tabby"]], dogs])
    with_tree = train(recipe, runs_root=tmp_path / "runs", progress=False)
    without = train(tiny_recipe(tree), runs_root=tmp_path / "runs", progress=False)
    assert with_tree.finished and without.finished
    # the same seed and draws: only the tree term differs
    assert with_tree.metrics()[0]["train_loss"] != without.metrics()[0]["train_loss"]


def test_classes_that_are_not_wnids_are_refused_naming_the_key_and_dataset(tmp_path, database):
    directory, _ = database
    tree = make_tree(tmp_path / "names")  # a_cls, b_cls, c_cls, like fashion50's names
    recipe = tiny_recipe(tree, hierarchy="wordnet", tree_loss_weight=1.0,
                         wordnet_dir=str(directory))
    task = ClassifyTask(recipe, load_run_data(recipe), torch.device("cpu"), None)
    with pytest.raises(VipnbError, match=r"hierarchy: wordnet needs classes named by ImageNet "
                                         r"wnids .* dataset 'folder'.* 'a_cls'"):
        task._hierarchy(None)
    fashion = load_recipe("vipf_resnest101_tsl", "cpu")
    assert fashion.dataset == "fashion50" and fashion.hierarchy == "induced"


# -- the VIPF recipes --------------------------------------------------------------------------

TSL_ROWS = ("vipf_effnet_b3_tsl", "vipf_effnet_b5_tsl", "vipf_effnet_b6_tsl",
            "vipf_resnest101_tsl", "vipf_resnest200_tsl")


def test_vipf_tree_supervision_uses_the_semantic_hierarchy_at_paper():
    """VIPF §3.2: "The semantic relations of classes in VIPriors can be induced as a
    hierarchical tree. Child nodes of the tree represent 1000 classes in the dataset and parent
    nodes represent superclasses such as animal, vehicle and etc. [...] a hierarchical
    architecture is defined according to the semantic relationship based on 1000 classes."
    fashion50 (cpu, smoke) has no WordNet classes: there the tree stays induced, as before."""
    for name in (*TSL_ROWS, "vipf_resnest101_tsl_g1"):
        paper = load_recipe(name, "paper")
        assert (paper.hierarchy, paper.hierarchy_from, paper.tree_loss_weight > 0) == (
            "wordnet", "", True), name
        for profile in ("cpu", "smoke"):
            small = load_recipe(name, profile)
            assert (small.hierarchy, small.hierarchy_from) == (
                "induced", name.removesuffix("_g1").removesuffix("_tsl")), (name, profile)
    induced = load_recipe("vipf_resnest101_tsl_induced", "paper")
    assert (induced.hierarchy, induced.hierarchy_from) == ("induced", "vipf_resnest101")
    tsl = load_recipe("vipf_resnest101_tsl", "paper")
    same = set(tsl.to_dict()) - {"name", "description", "hierarchy", "hierarchy_from"}
    assert {k: getattr(induced, k) for k in same} == {k: getattr(tsl, k) for k in same}
