"""Lesson recording and the course library (docs/recording.md).

The recorder is a subscriber fed the teacher's original encoded frames (recorder.py), writing
crash-tolerant packet logs (packetlog.py) under <data-dir>/recordings/ and publishing finished
lessons, remuxed without re-encoding (remux.py), into <data-dir>/library/ (library.py).
"""
