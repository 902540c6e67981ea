"""The Django-suite comparison reads unittest's real report (scripts/django_suite.py).

The suite itself runs from ``make django-suite`` (part of ``make test``); these tests make sure
its verdict cannot pass by misreading the output: counts, failing ids and the set difference
come from a report that unittest really printed.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import unittest
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sent_otel_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


suite_script = load("django_suite")
runner_script = load("django_suite_runner")


def report(*, broken: bool) -> tuple[str, unittest.TestResult]:
    """What unittest prints for a small suite; ``broken`` adds a failure and an error."""

    class Cases(unittest.TestCase):
        def test_ok(self) -> None:
            self.assertTrue(True)

        @unittest.skip("not here")
        def test_skipped(self) -> None:
            raise AssertionError("skipped tests do not run")

        @unittest.expectedFailure
        def test_known_bug(self) -> None:
            self.assertEqual(1, 2)

        def test_fails(self) -> None:
            self.assertEqual(broken, False)

        def test_errors(self) -> None:
            if broken:
                raise RuntimeError("boom")

    Cases.__qualname__ = "Cases"
    Cases.__module__ = "sample.tests"
    out = io.StringIO()
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Cases)
    result = unittest.TextTestRunner(stream=out, verbosity=1).run(suite)
    return out.getvalue(), result


def test_a_green_report_is_read_as_green() -> None:
    output, run = report(broken=False)
    result = suite_script.parse_output("bare", output)
    assert result.complete
    assert result.ran == run.testsRun > 0  # Python 3.12+ no longer counts skipped tests as run
    assert (result.failures, result.errors) == (0, 0)
    assert result.counts == {"skipped": 1, "expected failures": 1}
    assert result.failing == set()


def test_failures_and_errors_are_counted_with_their_ids() -> None:
    output, run = report(broken=True)
    result = suite_script.parse_output("plugin", output)
    assert result.ran == run.testsRun
    assert (result.failures, result.errors) == (len(run.failures), len(run.errors)) == (1, 1)
    ids = {test_id.split(" ")[0] for test_id in result.failing}
    assert ids == {"test_fails", "test_errors"}
    assert all("sample.tests.Cases" in test_id for test_id in result.failing)


def test_only_failures_the_bare_run_lacks_are_blamed_on_the_plugin() -> None:
    bare = suite_script.parse_output("bare", report(broken=False)[0])
    plugin = suite_script.parse_output("plugin", report(broken=True)[0])
    assert len(suite_script.new_failures(bare, plugin)) == 2
    assert suite_script.new_failures(plugin, plugin) == set()
    assert suite_script.new_failures(plugin, bare) == set()


def test_a_crashed_run_has_no_result() -> None:
    result = suite_script.parse_output("plugin", "Traceback (most recent call last):\n ...")
    assert not result.complete


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], [runner_script.PLUGIN_MIDDLEWARE]),
        (["a.B", "c.D"], [runner_script.PLUGIN_MIDDLEWARE, "a.B", "c.D"]),
        (("a.B", runner_script.PLUGIN_MIDDLEWARE), [runner_script.PLUGIN_MIDDLEWARE, "a.B"]),
    ],
)
def test_the_plugin_goes_first_exactly_once(given: list[str], expected: list[str]) -> None:
    assert runner_script.with_plugin_first(given) == expected
