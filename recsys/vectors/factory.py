"""Opening the vector store a deployment is configured for: Qdrant Edge or a Qdrant server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys.vectors.versions import VectorStore

if TYPE_CHECKING:
    from recsys.config import Settings


def open_vector_store(settings: Settings | None = None) -> VectorStore:
    """The store configured by ``settings``: a Qdrant server when ``qdrant_url`` is set,
    otherwise embedded Qdrant Edge under ``vectors_dir``."""
    if settings is None:
        from recsys.config import get_settings

        settings = get_settings()
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from recsys.vectors.client import ClientStore

        client = QdrantClient(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            timeout=settings.qdrant_timeout,
        )
        return ClientStore(
            client,
            keep=settings.keep_versions,
            owns_client=True,
            shards=settings.qdrant_shards,
            replicas=settings.qdrant_replicas,
        )

    from recsys.vectors.edge import EdgeStore

    return EdgeStore(
        settings.vectors_dir, keep=settings.keep_versions, replicas=settings.edge_replicas
    )
