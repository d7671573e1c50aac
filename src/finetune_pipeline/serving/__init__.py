"""The HTTP server: ``app.py`` (FastAPI routes), ``batcher.py`` (dynamic batching), ``server.py`` (uvicorn)."""
