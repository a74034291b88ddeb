"""Recordings: what a worker recorded under ``<data_dir>/sessions/<id>/``, served by that worker,
plus what clients add to a recording (a browser recording, comments, diagnostics) and the cleanup
by age and storage cap.

Neutral: the worker serves it (``worker/routes_recordings.py``), the gateway only proxies to the
worker that made a recording and imports nothing here but the id check (``ids``).

- ``ids`` — what a recording (or session) id may look like, checked before any use.
- ``store`` — ``RecordingStore``: paths (no traversal), reads, the zip stream, client writes.
- ``uploads`` — the storage budget and the streamed browser-recording upload.
- ``cleanup`` — deletion by age, then oldest first while over the cap.
"""
