"""One exception type for problems the user can fix: the CLI prints it without a traceback."""
from __future__ import annotations

from pathlib import Path


class SpecrnnError(Exception):
    """A user-facing error: bad input, bad config, missing run folder."""


class Interrupted(SpecrnnError):
    """Ctrl-C (SIGINT) during a command that can be resumed; the message says how."""


class AudioError(SpecrnnError):
    """A file that cannot be used as audio; carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable: extraction workers return the errors they found
        return AudioError, (self.path, self.reason)


class BadFilesError(SpecrnnError):
    """Several unusable files found before training; lists each with its reason."""

    def __init__(self, errors: list[AudioError], hint: str = ""):
        self.errors = errors
        shown = "\n".join(f"  {e.path}: {e.reason}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} unusable audio file(s):\n{shown}{more}" + (f"\n{hint}" if hint else ""))


ENROL = ("this model was trained with per-speaker normalisation (model.normalize: group): enrol the speaker first, "
         "with some of its recordings (no labels needed): Predictor.enroll(paths), or specrnn predict --enroll")
