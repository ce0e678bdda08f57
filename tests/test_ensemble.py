import numpy as np
import pytest

from vipnb.errors import VipnbError
from vipnb.eval.ensemble import softmax, top_models_weights, weighted_score_average


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
