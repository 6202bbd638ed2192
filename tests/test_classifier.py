"""MaskClassifier on a real (tiny, int8) TFLite model through LiteRT."""

import numpy as np
import pytest

from device.classifier import MaskClassifier
from device.contract import ModelCard, card_path


def test_batch_matches_one_by_one(tiny_classifier):
    clf = MaskClassifier(tiny_classifier, num_threads=1)
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    batch = clf.predict_crops(crops)
    single = np.concatenate([clf.predict_crops(crops[i : i + 1]) for i in range(5)])
    assert batch.shape == (5, 2)
    np.testing.assert_allclose(batch, single, atol=1e-6)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=0.02)
    assert clf.predict_crops(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 2)


def test_classify_frame_boxes_and_model_info(tiny_classifier):
    clf = MaskClassifier(tiny_classifier)
    frame = np.full((480, 640, 3), 100, np.uint8)
    probs = clf.classify(frame, [(10, 10, 60, 70), (600, 400, 660, 500)])
    assert probs.shape == (2, 2)
    assert clf.alert_scores(probs).shape == (2,)
    info = clf.info
    assert info["quantization"] == "int8" and len(info["sha256"]) == 64


def test_card_mismatch_and_corrupt_model(tiny_classifier, tmp_path):
    bad = tmp_path / "m.tflite"
    bad.write_bytes(tiny_classifier.read_bytes())
    ModelCard(input_size=96, quantization="int8").save(card_path(bad))
    with pytest.raises(ValueError, match="does not match its card"):
        MaskClassifier(bad)
    card_path(bad).unlink()
    with pytest.raises(FileNotFoundError, match="m.json"):
        MaskClassifier(bad)
    ModelCard(input_size=64).save(card_path(bad))
    bad.write_bytes(tiny_classifier.read_bytes()[: 300])
    with pytest.raises(ValueError, match="m.tflite"):
        MaskClassifier(bad)
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="not a TFLite model"):
        MaskClassifier(bad)
