"""The jobs service: an ARQ worker that runs the contract's jobs (``python -m services.jobs``)."""
