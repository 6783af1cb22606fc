"""recsys: personalized feeds from interaction logs, served from Qdrant."""

__version__ = "0.1.0"
