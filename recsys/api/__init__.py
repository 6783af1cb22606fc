"""The HTTP service: the only package that imports FastAPI.

``create_app`` builds the app; ``serve`` runs it under uvicorn.
"""

from recsys.api.app import create_app
from recsys.api.server import InsecureBindError, serve

__all__ = ["InsecureBindError", "create_app", "serve"]
