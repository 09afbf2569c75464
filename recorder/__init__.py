"""Lesson recording and the course library (docs/recording.md).

The recorder is driven by the room (recorder.py): each track the teacher publishes gets a
subscriber that queues the original encoded frames for the lesson's writer thread (writer.py),
which appends them to crash-tolerant packet logs (packetlog.py) under <data-dir>/recordings/.
Finished lessons are remuxed without re-encoding (remux.py) into <data-dir>/library/
(library.py). The package imports nothing of the relay but its pure kernel, relay.core.
"""
