"""The job implementations, one module per group of jobs; each is named by its definition in ``services.contract``."""
