"""Submission files in the VIPriors format, scored like the toolkit's evaluate_classification.py."""

import numpy as np
import pytest

from vipnb.errors import VipnbError
from vipnb.eval.submission import (
    SubmissionScore,
    read_labels_csv,
    score_submission,
    write_submission,
)

TRUTH = {"img_1.JPEG": 3, "img_2.JPEG": 0, "img_3.JPEG": 7, "img_4.JPEG": 3, "img_5.JPEG": 1}


@pytest.fixture
def ground_truth_csv(tmp_path):
    path = tmp_path / "val_labels.csv"
    rows = "".join(f"{image_id},{label}\n" for image_id, label in TRUTH.items())
    path.write_text("Image IDs,Labels\n" + rows)
    return path


@pytest.fixture
def submission_csv(tmp_path):
    # img_5 is missing and img_9 is not in the ground truth; of the four matched, three are right.
    image_ids = ["img_1.JPEG", "img_2.JPEG", "img_3.JPEG", "img_4.JPEG", "img_9.JPEG"]
    return write_submission(
        tmp_path / "out" / "submission.csv", image_ids, np.array([3, 0, 2, 3, 4])
    )


def test_written_file_has_the_toolkit_layout(submission_csv):
    lines = submission_csv.read_text().splitlines()
    assert lines[:2] == ["Image IDs,Predictions", "img_1.JPEG,3"]
    assert len(lines) == 6
    assert not list(submission_csv.parent.glob(".*.tmp")), "the temp file must be gone"


def test_score_matches_hand_count(ground_truth_csv, submission_csv):
    score = score_submission(ground_truth_csv, submission_csv)
    assert score == SubmissionScore(top1=0.75, matched=4, missing=1)
    assert score.coverage == 0.8


def test_pandas_reads_our_files_like_the_toolkit(ground_truth_csv, submission_csv):
    """Re-run the toolkit's own reading (pandas) on our files and compare."""
    pd = pytest.importorskip("pandas")

    def toolkit_accuracy(gt_path, sub_path):
        ground_truth = pd.read_csv(gt_path).to_numpy()
        submission = pd.read_csv(sub_path).to_numpy()
        indexed_gt = {row[0]: row for row in ground_truth}
        indexed_sbm = {row[0]: row for row in submission}
        tp = fp = 0.0
        for image_id in indexed_gt:
            if image_id not in indexed_sbm:
                continue
            if indexed_gt[image_id][1] == indexed_sbm[image_id][1]:
                tp += 1.0
            else:
                fp += 1.0
        return tp / (tp + fp)

    for path in (ground_truth_csv, submission_csv):
        parsed = {row[0]: int(row[1]) for row in pd.read_csv(path).to_numpy()}
        assert parsed == read_labels_csv(path)
    assert toolkit_accuracy(ground_truth_csv, submission_csv) == pytest.approx(
        score_submission(ground_truth_csv, submission_csv).top1
    )


def test_write_rejects_mismatched_or_repeated_ids(tmp_path):
    with pytest.raises(VipnbError, match="2 image ids but 3 predictions"):
        write_submission(tmp_path / "s.csv", ["a", "b"], np.array([1, 2, 3]))
    with pytest.raises(VipnbError, match="'a' appears twice"):
        write_submission(tmp_path / "s.csv", ["a", "a"], np.array([1, 2]))
    with pytest.raises(VipnbError, match="argmax"):
        write_submission(tmp_path / "s.csv", ["a", "b"], np.zeros((2, 10)))
    assert not (tmp_path / "s.csv").exists()


def test_malformed_rows_name_the_file_and_line(tmp_path):
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("Image IDs,Predictions\nimg_1.JPEG,3\nimg_2.JPEG,cat\n")
    with pytest.raises(VipnbError, match=r"bad_label.csv, line 3"):
        read_labels_csv(bad_label)

    extra_column = tmp_path / "extra_column.csv"
    extra_column.write_text("Image IDs,Predictions\n\nimg_1.JPEG,3,4\n")
    with pytest.raises(VipnbError, match=r"extra_column.csv, line 3"):
        read_labels_csv(extra_column)

    repeated = tmp_path / "repeated.csv"
    repeated.write_text("Image IDs,Predictions\nimg_1.JPEG,3\nimg_1.JPEG,4\n")
    with pytest.raises(VipnbError, match="line 3: image id 'img_1.JPEG' already given on line 2"):
        read_labels_csv(repeated)

    no_header = tmp_path / "no_header.csv"
    no_header.write_text("img_1.JPEG,3\nimg_2.JPEG,4\n")
    with pytest.raises(VipnbError, match="line 1.*looks like a data row"):
        read_labels_csv(no_header)

    with pytest.raises(VipnbError, match="no labels CSV"):
        read_labels_csv(tmp_path / "absent.csv")


def test_disjoint_ids_are_an_error_not_a_division_by_zero(tmp_path, ground_truth_csv):
    other = write_submission(tmp_path / "other.csv", ["img_100.JPEG"], np.array([1]))
    with pytest.raises(VipnbError, match="shares no image id"):
        score_submission(ground_truth_csv, other)
