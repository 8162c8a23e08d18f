"""Whether the Hugging Face Hub can be reached, decided once, before transformers or datasets load.

Without a network, ``huggingface_hub`` retries every look-up with back-off (about 50 s and a dozen
warning lines per file) before it gives up; in offline mode it answers from the local cache at once,
or fails at once. So a run whose machine cannot reach the Hub switches to offline mode itself.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_when_unreachable(timeout: float = 3.0) -> bool:
    """Set the offline variables when the Hub's host does not accept a connection within
    ``timeout`` seconds (no DNS, no route, a firewall); True when it did. Must run before
    huggingface_hub is imported: it reads the variables once."""
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            reached.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # name resolution itself has no timeout
    thread.start()
    thread.join(timeout + 0.5)
    if reached == [True]:
        return False
    for var in OFFLINE_VARS:
        os.environ[var] = "1"
    return True
