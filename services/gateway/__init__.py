"""The gateway: a FastAPI app that validates, records and queues jobs (``python -m services.gateway``)."""
