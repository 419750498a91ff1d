"""The HTTP API and dashboard (Starlette). ``create_app`` builds the ASGI app; ``chronos serve`` runs it."""

from app.api.app import create_app

__all__ = ["create_app"]
