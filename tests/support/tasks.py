def tasks_among(callbacks):
    """The on-commit callbacks that send a Celery task (others announce launch progress to the
    page, broker/progress.py)."""
    return [c for c in callbacks if c.__qualname__.startswith("enqueue_after_commit")]
