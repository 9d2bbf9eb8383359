"""The HTTP API (FastAPI). It sends work to ``workers`` and never imports torch."""
