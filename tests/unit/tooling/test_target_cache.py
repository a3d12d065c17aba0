# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cache key decides whether a test target is rebuilt: it must follow every input."""
from __future__ import annotations

import pathlib

import pytest

import target_cache


def test_key_is_stable_for_equal_inputs():
    assert target_cache.input_key('a', b'b') == target_cache.input_key('a', b'b')


@pytest.mark.parametrize('left, right', [
    (('ab', 'c'), ('a', 'bc')),      # boundaries between inputs count
    (('a',), ('a', '')),             # so does the number of inputs
    (('a', 'b'), ('b', 'a')),        # and their order
])
def test_key_separates_inputs(left, right):
    assert target_cache.input_key(*left) != target_cache.input_key(*right)


def test_key_follows_file_contents(tmp_path: pathlib.Path):
    recipe = tmp_path / 'recipe'
    recipe.write_text('one')
    before = target_cache.input_key(recipe)
    recipe.write_text('two')
    assert target_cache.input_key(recipe) != before


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path / 'c'))
    assert target_cache.cache_dir() == tmp_path / 'c'
    assert (tmp_path / 'c').is_dir()


def test_publish_replaces_and_prune_keeps_only_the_new_build(tmp_path, monkeypatch):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path))
    old = tmp_path / 'root-aaaa.tar'
    old.write_text('old')
    partial = tmp_path / 'root-bbbb.tar.partial'
    partial.write_text('new')
    final = target_cache.publish(partial, tmp_path / 'root-bbbb.tar')
    target_cache.prune('root-', final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['root-bbbb.tar']
    assert final.read_text() == 'new'
