# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest hooks that print what tests measured (their ``user_properties``) after the run.

A conftest takes them with ``pytest_runtest_logreport, pytest_terminal_summary = hooks(TITLE)``.
"""
from __future__ import annotations

import typing as t


def hooks(title: str) -> tuple[t.Callable[[t.Any], None], t.Callable[[t.Any], None]]:
    """Return the two hooks: one keeps each test's measurements, the other prints them under TITLE."""
    measurements: list[tuple[str, list[tuple[str, object]]]] = []

    def pytest_runtest_logreport(report: t.Any) -> None:
        if report.when == 'teardown' and report.user_properties:
            measurements.append((report.nodeid, list(report.user_properties)))

    def pytest_terminal_summary(terminalreporter: t.Any) -> None:
        if not measurements:
            return
        terminalreporter.write_sep('-', title)
        for nodeid, properties in measurements:
            terminalreporter.write_line(nodeid.rsplit('::', 1)[-1])
            for name, value in properties:
                terminalreporter.write_line(f'  {name}: {value}')

    return pytest_runtest_logreport, pytest_terminal_summary
