"""``python -m bench``: our stack against the FastAPI tutorial (the seed) and plain ARQ, in one run."""
