import numpy as np
import pytest

from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.eval.ensemble import softmax, top_models_weights, weighted_score_average
from vipnb.study.seed_groups import SeedGroup, weighted_ensemble_top1


def test_weighted_score_average_by_hand():
    a = np.log(np.array([[0.8, 0.2]]))
    b = np.log(np.array([[0.2, 0.8]]))
    # (3·0.8 + 1·0.2) / 4 = 0.65
    assert weighted_score_average([a, b], [3, 1])[0] == pytest.approx([0.65, 0.35])
    assert weighted_score_average([a], [1])[0] == pytest.approx(softmax(a)[0])


def test_weighted_score_average_checks_its_inputs():
    with pytest.raises(VipnbError, match="one weight per model"):
        weighted_score_average([np.zeros((1, 2))], [1, 2])
    with pytest.raises(VipnbError, match="different image sets"):
        weighted_score_average([np.zeros((1, 2)), np.zeros((2, 2))], [1, 1])


def test_top_models_get_the_big_weight():
    assert top_models_weights([70.0, 72.0, 71.0, 69.0], n_best=2) == [1.0, 3.0, 3.0, 1.0]
    assert top_models_weights([70.0, 70.0], n_best=1) == [3.0, 1.0]


def _group(tmp_path, name, val_logits, test_logits):
    """A seed group whose runs hold the given val and test logits (one array per seed)."""
    runs = []
    for seed, (val, test) in enumerate(zip(val_logits, test_logits, strict=True)):
        run = RunDir(tmp_path / f"{name}-s{seed}")
        run.path.mkdir(parents=True)
        for split, logits in (("val", val), ("test", test)):
            labels = np.array([0, 1, 1])
            run.write_logits(split, np.log(np.asarray(logits)), labels,
                             [f"img_{i}" for i in range(3)], ["a", "b"])
        runs.append(run)
    return SeedGroup(name, runs)


def test_weighted_ensemble_top1_per_seed_with_the_validation_best_weighted(tmp_path):
    right, wrong = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], [[0.2, 0.8], [0.7, 0.3], [0.8, 0.2]]
    good = _group(tmp_path, "good", [right, right], [right, right])  # val 100 %
    bad = _group(tmp_path, "bad", [wrong, wrong], [wrong, wrong])  # val 0 %
    # weight 3 for `good`: its probabilities win every image of both seeds
    assert weighted_ensemble_top1([good, bad], n_best=1) == [100.0, 100.0]
    # equal weights: `bad`, more confident, wins images 1 and 2
    assert weighted_ensemble_top1([good, bad], n_best=0) == pytest.approx([100 / 3] * 2)
    assert weighted_ensemble_top1([bad, good], n_best=1, split="val") == [100.0, 100.0]
