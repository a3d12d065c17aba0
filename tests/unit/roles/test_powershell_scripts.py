# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every PowerShell script of the collection parses (no Windows host here: tree-sitter's PowerShell grammar)."""
from __future__ import annotations

import pathlib

import pytest
import tree_sitter
import tree_sitter_powershell

COLLECTION = pathlib.Path(__file__).resolve().parents[3]
SCRIPTS = sorted(p for top in ('roles', 'plugins') for p in (COLLECTION / top).rglob('*.ps1'))
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def syntax_errors(source: bytes) -> list[str]:
    """Where SOURCE does not parse: (line:column) of each ERROR or MISSING node."""
    errors, stack = [], [PARSER.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, column = node.start_point
            errors.append(f'{row + 1}:{column + 1} {"missing " + node.type if node.is_missing else "unexpected"}')
        elif node.has_error:
            stack.extend(node.children)
    return sorted(errors)


def test_the_parser_finds_errors() -> None:
    assert syntax_errors(b'if ($x) { Write-Output 1 }\n') == []
    assert syntax_errors(b'if ($x { Write-Output 1 }\n')
    assert syntax_errors(b'$h = @{ a = 1\n')


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: str(p.relative_to(COLLECTION)))
def test_script_parses(script: pathlib.Path) -> None:
    assert syntax_errors(script.read_bytes()) == []
