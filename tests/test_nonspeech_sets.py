"""The drum-kit data set of the nonspeech benchmark (benchmarks/nonspeech.py): instrument names to kinds, and a kit
in Hydrogen's drumkit.xml format read into (path, kind, kit) rows, instruments of no kind left out."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.nonspeech import drum_kind, drum_manifest, drum_rows

from .conftest import write


@pytest.mark.parametrize("name, kind", [("Kick (Tama Superstar 22\")", "kick"), ("c3 - bass drum 1", "kick"), ("BassDrum", "kick"),
                                        ("Hi-Hat Closed (Paiste)", "hihat"), ("Closed HH", "hihat"), ("Sabian Hat Choke", "hihat"),
                                        ("Snare Rimshot", "snare"), ("Pearl Tom Floor", "tom"), ("Floor Tom", "tom"),
                                        ("Crash/Ride Bell", "cymbal"), ("Zildjian Splash", "cymbal"), ("Hand Clap", "clap"),
                                        ("Cowbell", None), ("Stick", None), ("Djembe1 Slap", None)])
def test_drum_kinds_from_instrument_names(name, kind):
    assert drum_kind(name) == kind


def test_a_hydrogen_kit_becomes_rows_by_kind_and_kit(tmp_path):
    kit = tmp_path / "kits" / "MyKit"
    kit.mkdir(parents=True)
    for f in ("k1.wav", "k2.wav", "s1.wav", "cb.wav"):
        write(kit / f, np.random.default_rng(0).normal(0, 0.1, 4000).astype(np.float32))
    xml = """<?xml version="1.0"?><drumkit_info xmlns="http://www.hydrogen-music.org/drumkit"><name>MyKit</name>
    <instrumentList>
      <instrument><name>Kick</name><layer><filename>k1.wav</filename></layer><layer><filename>k2.wav</filename></layer></instrument>
      <instrument><name>Snare Jazz</name><layer><filename>s1.wav</filename></layer><layer><filename>gone.wav</filename></layer></instrument>
      <instrument><name>Cowbell</name><layer><filename>cb.wav</filename></layer></instrument>
    </instrumentList></drumkit_info>"""
    (kit / "drumkit.xml").write_text(xml)
    rows = drum_rows(tmp_path / "kits")
    assert sorted((p.split("/")[-1], k, g) for p, k, g in rows) == [("k1.wav", "kick", "MyKit"), ("k2.wav", "kick", "MyKit"),
                                                                     ("s1.wav", "snare", "MyKit")]
    csv = drum_manifest(tmp_path / "drums.csv", tmp_path / "kits")
    assert csv.read_text().splitlines()[0] == "path,label,group" and len(csv.read_text().splitlines()) == 4


def test_the_midi_file_holds_the_program_and_one_note_a_slot():
    from benchmarks.nonspeech import midi_notes

    data = midi_notes(41, [48, 51, 54], note_s=1.0, slot_s=1.5)
    assert data[:4] == b"MThd" and int.from_bytes(data[8:10], "big") == 0 and int.from_bytes(data[12:14], "big") == 480
    track = data[14:]
    assert track[:4] == b"MTrk" and int.from_bytes(track[4:8], "big") == len(track) - 8
    body = track[8:]
    assert body[1:3] == bytes([0xC0, 41])  # the program first
    assert body.count(bytes([0x90])) == 3 and body.endswith(b"\xff\x2f\x00")
    # note-on, 960 ticks (one second: 0x87 0x40), note-off; the next note 480 ticks (half a second: 0x83 0x60) later
    assert bytes([0x90, 48, 100, 0x87, 0x40, 0x80, 48, 0, 0x83, 0x60, 0x90, 51]) in body
