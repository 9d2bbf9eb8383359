"""The Celery workers: render jobs through ``fractal``, store images, record jobs."""
