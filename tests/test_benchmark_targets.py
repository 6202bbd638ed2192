"""Every `make bench-*` prints its targets and exits 1 on a miss: the shared rules, and bench-train's
exit status with an impossible target (the other three benchmarks test theirs end to end)."""

from __future__ import annotations

import pytest

from benchmarks import train as bench_train
from benchmarks.targets import EXIT_MISSED, check, exit_status, parse_overrides


def test_check_is_inclusive_and_a_missing_figure_misses():
    assert check("f1", 0.98, 0.98, at_most=False).passed
    assert not check("f1", 0.979, 0.98, at_most=False).passed
    assert check("ms", 8.0, 8.0, at_most=True).passed and not check("ms", 8.01, 8.0, at_most=True).passed
    missing = check("f1", None, 0.5, at_most=False)
    assert not missing.passed and "not measured" in missing.line()
    assert exit_status([check("a", 1, 0, False), check("b", 0, 1, False)]) == EXIT_MISSED == 1
    assert exit_status([check("a", 1, 0, False)]) == 0


def test_overrides_name_the_bad_pair():
    assert parse_overrides(["accuracy=1.01"], {"accuracy": 0.985, "f1": 0.98}) == {"accuracy": 1.01, "f1": 0.98}
    with pytest.raises(ValueError, match="'speed=1'.*NAME one of accuracy, f1"):
        parse_overrides(["speed=1"], {"accuracy": 0.985, "f1": 0.98})
    with pytest.raises(ValueError, match="'fast' is not a number"):
        parse_overrides(["accuracy=fast"], {"accuracy": 0.985})


def test_bench_train_exits_1_on_an_impossible_target(tmp_path, monkeypatch, capsys):
    """The command's wiring: --target reaches the verdict and the exit status (training is stubbed:
    its figures are fixed, the targets and the summary are the real code)."""
    metrics = {"accuracy": 0.9914, "without_mask_f1": 0.9877}

    def fake_bench_target(size, data_root, runs, out, retrain, extra, suffix="", limits=None):
        targets = bench_train.check_run(metrics, 6.8, limits)
        return {"name": f"all-{size}{suffix}", "kind": "target", "input_size": size, "targets": targets,
                "test": {**metrics, "n": 1052, "threshold": 0.29}, "train": {"seconds": {"total": 408}},
                "all_passed": all(t["passed"] for t in targets.values())}

    monkeypatch.setattr(bench_train, "bench_target", fake_bench_target)
    monkeypatch.setattr(bench_train, "markdown", lambda docs: "table")
    args = ["--skip-generalization", "--skip-3class", "--out", str(tmp_path)]
    assert bench_train.main(args) == 0
    assert bench_train.main([*args, "--target", "accuracy=1.01"]) == 1
    assert bench_train.main([*args, "--target", "train_minutes=1"]) == 1
    assert bench_train.main([*args, "--target", "speed=1"]) == 2
    assert "NAME one of accuracy, without_mask_f1, train_minutes" in capsys.readouterr().err


def test_largest_int8_gap_names_the_class_and_the_faces():
    """The figure behind issue 15's int8 target: the largest gap over recall and flagged rate,
    and what it is in faces (hand-made rates: 2 of 365 bare faces is 0.548 points)."""
    float32 = {"recall": {"with_mask": 0.9927, "without_mask": 360 / 365, "incorrect_mask": 0.60},
               "flagged": {"with_mask": 5 / 687, "without_mask": 361 / 365, "incorrect_mask": 0.80}}
    int8 = {"recall": {"with_mask": 0.9927, "without_mask": 362 / 365, "incorrect_mask": 0.60},
            "flagged": {"with_mask": 5 / 687, "without_mask": 362 / 365, "incorrect_mask": 0.80}}
    faces = {"with_mask": 687, "without_mask": 365, "incorrect_mask": 20}
    gap = bench_train.largest_int8_gap(float32, int8, faces)
    assert gap == {"points": 0.548, "metric": "recall", "label": "without_mask", "faces": 2, "of": 365}
    # One incorrect face flagged differently outweighs both: 5 points.
    int8["flagged"]["incorrect_mask"] = 0.75
    gap = bench_train.largest_int8_gap(float32, int8, faces)
    assert (gap["points"], gap["metric"], gap["label"], gap["faces"], gap["of"]) == (5.0, "flagged", "incorrect_mask", 1, 20)
    with pytest.raises(ValueError, match="no per-class rates"):
        bench_train.largest_int8_gap({"recall": {}, "flagged": {}}, {"recall": {}, "flagged": {}}, faces)


def test_alert_rows_say_the_int8_gap_in_faces():
    test = {"labels": ["with_mask", "without_mask", "incorrect_mask"], "without_mask_f1": 0.9822,
            "per_class": {"incorrect_mask": {"f1": 0.6667}},
            "alert": {"flagged": {"incorrect_mask": {"rate": 0.8, "flagged": 16, "n": 20},
                                  "with_mask": {"rate": 5 / 687, "flagged": 5, "n": 687},
                                  "without_mask": {"rate": 361 / 365, "flagged": 361, "n": 365}}}}
    doc = {"name": "all-128-3class", "kind": "three_class", "test": test, "train": {"seconds": {"total": 719}},
           "quantization": {"max_delta_points": 0.548, "largest_gap": {"points": 0.548, "metric": "recall",
                                                                       "label": "without_mask", "faces": 2, "of": 365}}}
    row = bench_train.alert_rows([doc])[2]
    assert "| 0.55 pts (without_mask recall, 2 of 365) |" in row
    del doc["quantization"]["largest_gap"]  # a summary written before the field existed still renders
    assert "| 0.55 pts |" in bench_train.alert_rows([doc])[2]



def test_target_lines_give_shares_of_faces_their_interval():
    doc = {"name": "all-128-3class", "all_passed": False, "targets": {
        "incorrect_flagged": {"value": 0.8, "limit": 0.8, "passed": True, "faces": [16, 20],
                              "interval_95": [0.5840, 0.9193]},
        "int8_class_delta_points": {"value": 0.548, "limit": 0.5, "passed": False}}}
    assert bench_train.target_lines(doc) == [
        "Targets for all-128-3class (FAIL):",
        "- PASS incorrect_flagged: 0.8 (target >= 0.8); 16 of 20, 95 % interval 0.584-0.919",
        "- FAIL int8_class_delta_points: 0.548 (target <= 0.5)",
    ]
