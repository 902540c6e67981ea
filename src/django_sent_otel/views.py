"""``GET /metrics``: Prometheus exposition, text or OpenMetrics, optionally protected."""

from __future__ import annotations

import gzip
import hmac
import ipaddress
import logging
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder, gzip_accepted

from .conf import conf
from .delivery import TRACKER_ATTR
from .metrics import multiprocess_dir, multiprocess_registry
from .pipeline import runtime

logger = logging.getLogger(__name__)


def _registry() -> Any:
    metrics = runtime().metrics
    if multiprocess_dir():
        return multiprocess_registry(metrics)
    if metrics is not None and metrics.registry is not None:
        return metrics.registry
    from prometheus_client import REGISTRY

    return REGISTRY


def _client_ip(request: HttpRequest, header: str | None) -> str:
    if header:
        forwarded = request.META.get(header)
        if isinstance(forwarded, str) and forwarded.strip():
            # The right-most entry is the one the trusted proxy appended.
            return forwarded.split(",")[-1].strip()
    return str(request.META.get("REMOTE_ADDR", ""))


def _network_allowed(request: HttpRequest) -> bool:
    networks = conf.METRICS_ALLOWED_NETWORKS  # () when invalid: nobody
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(_client_ip(request, conf.METRICS_CLIENT_IP_HEADER))
    except ValueError:
        return False
    return any(address in network for network in networks)


def _token_ok(request: HttpRequest) -> bool:
    token = conf.METRICS_TOKEN  # a secret nobody knows when invalid
    if token is None:
        return True
    scheme, _, given = str(request.META.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token)


@login_not_required  # reachable under LoginRequiredMiddleware; access is ours to decide
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the metrics registry; never counted in its own metrics.

    The access settings are parsed on every scrape (cheap, and never stale); invalid ones
    fail closed as their parsers say.
    """
    tracker = request.__dict__.get(TRACKER_ATTR)
    if tracker is not None:
        tracker.discard()  # the handler has not returned: nothing was recorded
    if not _network_allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    if not _token_ok(request):
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = _registry()
    names = request.GET.getlist("name[]")
    if names:
        registry = registry.restricted_registry(names)
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    output = encoder(registry)
    response = HttpResponse(output, content_type=content_type)
    response["Cache-Control"] = "no-store"
    response["Vary"] = "Accept, Accept-Encoding"
    if gzip_accepted(request.META.get("HTTP_ACCEPT_ENCODING", "")):
        response.content = gzip.compress(output)
        response["Content-Encoding"] = "gzip"
    return response
