"""Afterword: durable background jobs for FastAPI, as a gateway and a jobs worker."""
