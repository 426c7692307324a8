"""The bundle's own error type: what a user can cause (a bad input, a wrong file), reported as one line naming the
file and the problem."""

from __future__ import annotations


class StudyError(ValueError):
    """A study's input is unusable; the message names the file (or folder) and the problem."""
