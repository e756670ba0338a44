"""Extraction's heap settings change speed, never features: same output inside and outside the block."""
import numpy as np
import pytest

from specrnn.config import FeatureConfig
from specrnn.data.heap import extraction_heap, trim
from specrnn.features import FeatureExtractor


def test_features_identical_inside_extraction_heap():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (8000, 16000, 3000)]
    ext = FeatureExtractor(FeatureConfig())
    outside = ext.extract(waves)
    with extraction_heap():
        inside = ext.extract(waves)
        trim()
    after = ext.extract(waves)
    for a, b, c in zip(outside, inside, after):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_error_in_extraction_heap_propagates_and_extraction_still_works():
    with pytest.raises(ValueError, match="boom"):
        with extraction_heap():
            raise ValueError("boom")
    assert FeatureExtractor(FeatureConfig()).extract([np.zeros(1600, np.float32)])[0].shape[1] == FeatureConfig().n_mels
