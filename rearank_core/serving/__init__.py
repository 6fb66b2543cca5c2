"""The rerank HTTP API (``rearank serve``): FastAPI app (``app``), cross-request batching onto one Reranker
(``batcher``), request guards (``middleware``), bodies (``schema``) and the listening socket (``server``)."""

from rearank_core.serving.app import create_app
from rearank_core.serving.batcher import Batcher
from rearank_core.serving.server import base_url, bind_socket, serve

__all__ = ["Batcher", "base_url", "bind_socket", "create_app", "serve"]
