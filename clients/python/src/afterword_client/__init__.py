"""A Python client for Afterword's gateway: the job names and payload models, generated from its contract."""

from afterword_client.models import *  # noqa: F403 (every job's payload model, whatever jobs there are)
from afterword_client.models import __all__ as _models

__all__ = [*_models]
