# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: pipeline_summary
short_description: The summary table of an image pipeline run, one line per host
version_added: 0.1.0
description:
  - Turns the C(image_pipeline_result) facts of the hosts of a run into a text table (host,
    image, version, result, seconds per stage, total), one string per line, ready for
    M(ansible.builtin.debug) or a file.
  - A failed host's line names the stage that failed and whether its VM was restored; the lines
    after the table give each failure's cause.
options:
  _input:
    description:
      - The results, one dictionary per host, as the image_pipeline role sets C(image_pipeline_result)
        (keys C(host), C(image), C(version), C(result), C(stage), C(error), C(restored), C(timings)).
      - Items that are not dictionaries (hosts that never started the pipeline) are shown as V(not run)
        when they are strings (the host name).
    type: list
    elements: raw
    required: true
author:
  - imageprep.vm developers (@imageprep)
"""

EXAMPLES = r"""
- name: Print the summary of the run
  ansible.builtin.debug:
    msg: "{{ hosts | map('extract', hostvars, 'image_pipeline_result') | list | imageprep.vm.pipeline_summary }}"
  vars:
    hosts: "{{ query('ansible.builtin.inventory_hostnames', 'vms') }}"
"""

RETURN = r"""
_value:
  description: The table's lines, then one line per failure with its cause.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

# the stages in pipeline order; a column appears when any host has a timing for it
STAGES = ('preflight', 'backup', 'generalize', 'power_off', 'capture', 'verify', 'report', 'finish')
HEADER = ('host', 'image', 'version', 'result')


def _cell(value):
    """Text of one table cell."""
    if value is None or value == '':
        return '-'
    if isinstance(value, float):
        return f'{value:.1f}'
    return str(value)


def _outcome(result):
    """The result column: the result, with the failed stage and the restore for failures."""
    outcome = result.get('result') or 'not run'
    if outcome == 'failed':
        outcome += f" in {result.get('stage') or '?'}"
        outcome += ', VM restored' if result.get('restored') else ''
    return outcome


def pipeline_summary(results):
    """The summary table of an image pipeline run: one line per host, then the causes of failures."""
    if not isinstance(results, (list, tuple)):
        raise AnsibleFilterError(f'pipeline_summary: expected a list of results, got {type(results).__name__}')
    rows = []
    for item in results:
        if isinstance(item, str):
            item = {'host': item}
        if not isinstance(item, dict):
            raise AnsibleFilterError(f'pipeline_summary: a result must be a dictionary or a host name, got {item!r}')
        rows.append(item)
    stages = [s for s in STAGES if any(s in (r.get('timings') or {}) for r in rows)]
    table = [list(HEADER) + stages + ['total']]
    for row in rows:
        timings = row.get('timings') or {}
        try:
            total = sum(float(v) for v in timings.values())
        except (TypeError, ValueError) as exc:
            raise AnsibleFilterError(f"pipeline_summary: timings of {row.get('host')} are not numbers: {timings!r}") from exc
        table.append([_cell(row.get('host')), _cell(row.get('image')), _cell(row.get('version')), _outcome(row)]
                     + [_cell(float(timings[s]) if s in timings else None) for s in stages]
                     + [_cell(total if timings else None)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    numeric = set(range(len(HEADER), len(table[0])))
    lines = []
    for index, line in enumerate(table):
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
        lines.append('  '.join(cells).rstrip())
        if index == 0:
            lines.append('  '.join('-' * w for w in widths))
    for row in rows:
        if row.get('result') == 'failed':
            lines.append(f"{row.get('host')}: {row.get('error') or 'no cause recorded'}")
    return lines


class FilterModule:
    """Image pipeline summary."""

    def filters(self):
        return {'pipeline_summary': pipeline_summary}
