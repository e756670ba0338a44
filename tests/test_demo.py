"""The built-in demo data: every class is generated, decodes, lasts 0.2-2 s, is not silent, and is written once."""
import numpy as np

from specrnn.audio import load_audio
from specrnn.demo import CLASSES, SAMPLE_RATE, make_demo, synth


def test_demo_folder_has_every_class_and_decodable_clips(tmp_path):
    root = make_demo(tmp_path / "demo", per_class=3, seed=1)
    for c in CLASSES:
        files = sorted((root / c).glob("*.wav"))
        assert len(files) == 3, c
        for f in files:
            wave = load_audio(f, SAMPLE_RATE)  # raises AudioError for silent, empty or broken files
            assert 0.2 <= len(wave) / SAMPLE_RATE <= 2.0 and np.abs(wave).max() < 1.0
    assert not list(root.rglob("*.partial"))
    stamp = (root / CLASSES[0] / f"{CLASSES[0]}_000.wav").stat().st_mtime_ns
    assert make_demo(tmp_path / "demo", per_class=3, seed=1) == root  # already complete: nothing rewritten
    assert (root / CLASSES[0] / f"{CLASSES[0]}_000.wav").stat().st_mtime_ns == stamp


def test_pulsing_tone_differs_from_steady_tone_in_its_envelope():
    rng = np.random.default_rng(0)
    frame = SAMPLE_RATE // 100

    def envelope_range_db(x):
        rms = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))[2:-2]
        return 20 * np.log10(rms.max() / rms.min())

    steady = [envelope_range_db(synth("tone", rng)) for _ in range(10)]
    pulsing = [envelope_range_db(synth("am_tone", rng)) for _ in range(10)]
    assert max(steady) < 6 < 10 < min(pulsing)
