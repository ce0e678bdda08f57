"""Recipe values outside their range, unsafe names and unreadable files are refused up front,
with a message naming the source, the key and the value."""

from pathlib import Path

import pytest
import yaml

from vipnb.engine.recipe import from_dict, load_recipe, parse_overrides, read_recipe_file
from vipnb.errors import VipnbError

PROFILES = {"smoke": {}, "cpu": {}, "paper": {}}

BAD_VALUES = [
    ("lr", -1), ("lr", 0), ("lr", float("nan")), ("lr", float("inf")),
    ("epochs", 0), ("epochs", float("inf")), ("epochs", True), ("accum_steps", 0),
    ("input_size", 0), ("cache_size", 0), ("batch_size", 0), ("eval_batch_size", 0),
    ("experts", 0), ("val_every", 0), ("gate_k", 0), ("taylor_order", 0), ("moco_queue", 0),
    ("decay_epochs", 0), ("decay_rate", 0), ("decay_rate", 2),
    ("warmup_epochs", -1), ("cooldown_epochs", -1), ("mixup_off_epochs", -1),
    ("train_limit", -1), ("workers", -1), ("seed", -1), ("class_subset", [0, -1]),
    ("weight_decay", -1e-4), ("warmup_lr", -1), ("min_lr", -1), ("mixup_alpha", -0.2),
    ("center_loss_weight", -1), ("gaussian_noise", -1),
    ("drop_rate", 1), ("drop_path_rate", -0.1),
    ("hflip", 1.5), ("vflip", -0.5), ("random_erasing", 2), ("mixup_prob", 1.1),
    ("mixup_switch_prob", -1), ("distill_label_weight", 2),
    ("label_smoothing", 5), ("label_smoothing", 1), ("ema_decay", 1), ("ema_decay", -0.1),
    ("momentum", 1), ("moco_momentum", 1), ("val_into_train", 1),
    ("crop_pct", 0), ("crop_pct", 1.5),
    ("scale", [2, 1]), ("scale", [0.5, 0.2]), ("scale", [0, 1]), ("scale", [0.5]),
    ("ratio", [0, 1]), ("ratio", [2, 1]),
    ("mean", [0.5, 0.5]), ("std", [0.2, 0, 0.2]), ("std", [0.2] * 4),
    ("color_jitter", [0.4, 0.4, 0.4, 0.6]), ("color_jitter", [-0.1, 0, 0, 0]),
    ("moco_temperature", 0), ("bi_tempered_t1", 2), ("bi_tempered_t2", 0),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=lambda v: str(v))
def test_out_of_range_value_names_source_key_and_value(key, value):
    with pytest.raises(VipnbError) as info:
        from_dict({"name": "x", key: value}, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: ") and key in message


@pytest.mark.parametrize(("key", "edge", "beyond"), [
    ("label_smoothing", 0, -0.01), ("label_smoothing", 0.99, 1), ("epochs", 1, 0),
    ("accum_steps", 1, 0), ("warmup_epochs", 0, -1), ("ema_decay", 0, -0.01),
    ("momentum", 0, -0.01), ("crop_pct", 1, 1.01), ("hflip", 1, 1.01), ("hflip", 0, -0.01),
    ("val_into_train", 0, -0.1), ("drop_rate", 0, -0.1), ("weight_decay", 0, -1e-9),
    ("scale", [1, 1], [1, 1.01]), ("ratio", [1, 1], [1, 0.99]), ("lr", 1e-9, 0),
    ("color_jitter", [0, 0, 0, 0.5], [0, 0, 0, 0.51]),
])
def test_the_edge_of_a_range_is_accepted_and_one_step_beyond_refused(key, edge, beyond):
    assert from_dict({"name": "x", key: edge}).to_dict()[key] == (
        tuple(edge) if isinstance(edge, list) else edge)
    with pytest.raises(VipnbError, match=f"{key}="):
        from_dict({"name": "x", key: beyond})


def test_message_gives_the_allowed_range():
    with pytest.raises(VipnbError, match=r"label_smoothing=5\.0 is out of range; allowed: \[0, 1\)"):
        from_dict({"name": "x", "label_smoothing": 5})
    with pytest.raises(VipnbError, match=r"scale=\[2\.0, 1\.0\].*the first <= the second"):
        from_dict({"name": "x", "scale": [2, 1]})


def write_recipe(directory: Path, name: str = "r", **base) -> Path:
    path = directory / "r.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "profiles": PROFILES}))
    return path


def test_ranges_hold_for_files_overrides_and_replace(tmp_path):
    with pytest.raises(VipnbError, match=r"r\.yaml \(profile cpu\): batch_size=0 "):
        load_recipe(write_recipe(tmp_path, batch_size=0), "cpu")
    path = write_recipe(tmp_path)
    with pytest.raises(VipnbError, match=r"^override of .*r\.yaml \(profile cpu\): epochs=0 "):
        load_recipe(path, "cpu", parse_overrides(["epochs=0"]))
    with pytest.raises(VipnbError, match=r"^override: lr=-1\.0 "):
        load_recipe(path, "cpu").replace(lr=-1)


def test_mtl_moe_gate_cannot_route_to_more_experts_than_there_are():
    from_dict({"name": "x", "architecture": "mtl_moe", "experts": 3, "gate_k": 3})
    with pytest.raises(VipnbError, match="gate_k=4"):
        from_dict({"name": "x", "architecture": "mtl_moe", "experts": 3, "gate_k": 4})


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a..b", "", ".hidden", "x\\y", "a b"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(VipnbError, match="name="):
        from_dict({"name": name})


def test_a_dependency_is_a_recipe_name_or_yaml_path_never_a_bare_path(tmp_path):
    recipe = from_dict({"name": "student", "teacher": "moe_regnety160",
                        "init_from": str(tmp_path / "base.yaml"), "hierarchy_from": "../r.yml"})
    assert recipe.init_from.endswith("base.yaml")
    for key in ("teacher", "init_from", "hierarchy_from"):
        with pytest.raises(VipnbError, match=f"{key}='../../x'"):
            from_dict({"name": "student", key: "../../x"})


def test_traversal_name_creates_no_folder_outside_the_runs_root(tmp_path):
    from vipnb.engine.training import train

    path = write_recipe(tmp_path, name="../escaped", dataset="folder",
                        data_root=str(tmp_path / "no_data"))
    with pytest.raises(VipnbError, match="name='../escaped'"):
        train(load_recipe(path, "smoke"), runs_root=tmp_path / "runs", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]


@pytest.mark.parametrize(("text", "says"), [
    ("name: r\nbase: {lr: 0.1\n", "(?s)not valid YAML.*line 2.*Fix the line"),
    (b"name: r\xff\xfe\n", "not UTF-8.*save the recipe as UTF-8"),
    ("base: {}\nprofiles: {smoke: {}, cpu: {}, paper: {}}\n", "no `name`; add `name: r`"),
    ("name: r\nbase: [lr, 0.1]\nprofiles: {smoke: {}, cpu: {}, paper: {}}\n",
     "`base` is list.*mapping"),
    ("name: r\nprofiles: {smoke: {}, cpu: lr=1, paper: {}}\n", "`profiles.cpu` is str"),
    ("name: r\nprofiles: {smoke: {}, cpu: {}, paper: {}, papr: {}}\n", "unknown profile.*papr"),
    ("name: r\nextends: [a, b]\n", "`extends`"),
])
def test_a_broken_recipe_file_is_named_with_what_to_do(tmp_path, text, says):
    path = tmp_path / "r.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(VipnbError, match=says) as info:
        load_recipe(path, "cpu")
    assert str(path) in str(info.value)


def test_an_unreadable_recipe_path_is_named(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(VipnbError, match="folder.yaml: cannot read this recipe file"):
        read_recipe_file(tmp_path / "folder.yaml")


@pytest.mark.parametrize("argument", ["scale=[0.5,", "name='x", " =5"])
def test_bad_override_syntax_names_the_argument(argument):
    with pytest.raises(VipnbError, match="bad override") as info:
        parse_overrides([argument])
    assert repr(argument) in str(info.value)
