"""Lesson recording and the course library.

Planned shape (architecture.md): the recorder is a Subscriber fed the teacher's original
encoded frames, writing crash-tolerant segments under <data-dir>/recordings/ and publishing
finished lessons into <data-dir>/library/. Not implemented yet: nothing is recorded today.
"""
