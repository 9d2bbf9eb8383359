"""``spec2fractal batch``: render every request in a file, locally or through the service.

Each item is known by a hash of its request, so a re-run skips finished work (even after the
file is reordered) and retries failures. ``manifest.jsonl`` in the output folder records every
finished attempt; images are renamed into place before their line is written, so an
interrupted run never leaves a line pointing at a missing or partial file.

The typer command lives in :mod:`spec2fractal.batch.command`; it imports the rest (and the HTTP
client, for ``--server``) only when it runs.
"""
