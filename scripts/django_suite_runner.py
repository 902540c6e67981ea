"""Run Django's own ``runtests.py`` with or without django-sent-otel switched on.

Usage (from the ``tests/`` directory of Django's source distribution)::

    python django_suite_runner.py {bare,plugin} [runtests.py arguments...]

``runtests.py`` builds its settings in code (``ALWAYS_MIDDLEWARE``, ``ALWAYS_INSTALLED_APPS``)
and then calls ``django.setup()``. In ``plugin`` mode this script wraps ``django.setup`` so the
settings it is about to load get ``DeliveryMiddleware`` first in ``MIDDLEWARE`` and
``django_sent_otel`` in ``INSTALLED_APPS``; every ``override_settings(MIDDLEWARE=...)`` of a
test keeps the middleware first too, so the many tests that bring their own middleware list
run through it as well; and ``django.core.asgi.get_asgi_application`` returns Django's
handler inside ``DeliveryASGIMiddleware``, as the project's ASGI entry point does. Test
workers are forked (``--parallel``), so they inherit all of it.

With ``SENT_OTEL_TEST_RECORD=<path>`` every delivery is appended to ``path`` as a JSON line
(the test harness's records), which proves the plugin really saw the suite's responses.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

PLUGIN_MIDDLEWARE = "django_sent_otel.middleware.DeliveryMiddleware"
PLUGIN_APP = "django_sent_otel"
REPO_ROOT = Path(__file__).resolve().parents[1]


def with_plugin_first(middleware: Any) -> list[str]:
    entries = [m for m in middleware if m != PLUGIN_MIDDLEWARE]
    return [PLUGIN_MIDDLEWARE, *entries]


def switch_plugin_on() -> None:
    import django
    import django.core.asgi
    from django.test import utils

    real_setup = django.setup

    def setup(*args: Any, **kwargs: Any) -> None:
        from django.conf import settings

        settings.MIDDLEWARE = with_plugin_first(settings.MIDDLEWARE)
        if PLUGIN_APP not in settings.INSTALLED_APPS:
            settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, PLUGIN_APP]
        real_setup(*args, **kwargs)
        if os.environ.get("SENT_OTEL_TEST_RECORD"):
            from tests.harness import records

            records.connect()

    django.setup = setup  # type: ignore[assignment]

    real_override_init = utils.override_settings.__init__

    def override_init(self: Any, **kwargs: Any) -> None:
        if "MIDDLEWARE" in kwargs:
            kwargs["MIDDLEWARE"] = with_plugin_first(kwargs["MIDDLEWARE"])
        real_override_init(self, **kwargs)

    utils.override_settings.__init__ = override_init  # type: ignore[method-assign]

    real_get_asgi_application = django.core.asgi.get_asgi_application

    def get_asgi_application() -> Any:
        from django_sent_otel.asgi import DeliveryASGIMiddleware

        return DeliveryASGIMiddleware(real_get_asgi_application())

    django.core.asgi.get_asgi_application = get_asgi_application  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("bare", "plugin"):
        raise SystemExit("usage: django_suite_runner.py {bare,plugin} [runtests.py args...]")
    mode, args = argv[0], argv[1:]
    here = Path.cwd()
    if not (here / "runtests.py").is_file():
        raise SystemExit(f"run this from the tests/ directory of Django's sources, not {here}")
    # As when runtests.py is run as a script: its directory first on the path. The project's
    # root goes last, only for the records (``tests.harness.records``): Django's test apps win.
    sys.path[0] = str(here)
    sys.path.append(str(REPO_ROOT))
    if mode == "plugin":
        switch_plugin_on()
    sys.argv = [str(here / "runtests.py"), *args]
    runpy.run_path(str(here / "runtests.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
