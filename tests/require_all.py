"""A pytest plugin for targets that must run every test they select: a skip is a failure.

``make test-browser`` and ``make test-services`` install what their tests need first, so a
test that still skips (no Chromium, no PostgreSQL, an extra missing) means the target
tested nothing while CI showed green. Loaded with ``-p tests.require_all``; the fast suite
keeps its ordinary skips (GPU tests skip without CUDA). A module that skips as a whole
(``pytest.importorskip`` at its top) still skips: the modules of other suites are collected
too, before ``-m`` leaves them out, and their optional imports are not this target's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

PREFIX = "must not skip here: "


def _reason(longrepr: object) -> str:
    """The text of a skip: pytest keeps it as a (file, line, message) tuple."""
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = PREFIX + _reason(report.longrepr)
