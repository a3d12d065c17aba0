# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check Azure Resource Manager requests against the published OpenAPI files and the published examples.

The OpenAPI (Swagger 2.0) files and the example request/response files come from the public Azure REST API
specification (Azure/azure-rest-api-specs), kept in the directory named by ``IMAGEPREP_AZURE_REST_EXAMPLES``.

:class:`OpenApi` finds the operation a request is for (path template and method) and checks its JSON body
against the body parameter's schema: properties the schema does not define (where it does not allow
``additionalProperties``), ``readOnly`` properties sent, required properties missing, wrong JSON types, and
values outside a closed enum (``x-ms-enum`` with ``modelAsString: false``, or no ``x-ms-enum``). ``$ref``s into
``common-types/v1/common.json``, which is not in the directory, match anything; a schema that takes members
from such a ``$ref`` (``allOf``) is open. Responses are checked the same way, without the request-only rules.

:func:`shape_problems` compares the shape of a body (its JSON key paths, list indices collapsed to ``[]``)
with an example's body; :func:`example_request` and :func:`example_response` read the examples.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import pathlib
import re
import typing as t

SPEC_FILES = (
    'ComputeRP/stable/2024-11-01/image.json',
    'ComputeRP/stable/2024-11-01/virtualMachine.json',
    'ComputeRP/stable/2024-11-01/computeRPCommon.json',
    'GalleryRP/stable/2024-03-03/gallery.json',
    'GalleryRP/stable/2024-03-03/galleryRPCommon.json',
)
# the file every spec refers to for Resource, SubResource, CloudError...; not part of the published fixtures
MISSING_REF = 'common-types/'
MAX_DEPTH = 64

Schema = t.Dict[str, t.Any]
Where = t.Tuple[Schema, str]   # a schema and the spec file its $refs are relative to


def examples_dir(value: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Return the examples directory: VALUE, else $IMAGEPREP_AZURE_REST_EXAMPLES; raise when it is not there."""
    path = value or os.environ.get('IMAGEPREP_AZURE_REST_EXAMPLES')
    if not path:
        raise RuntimeError('IMAGEPREP_AZURE_REST_EXAMPLES is not set: it must name the directory of the Azure REST API '
                           'examples and OpenAPI files (ComputeRP/, GalleryRP/, DiskRP/; the Makefile sets it)')
    found = pathlib.Path(path)
    if not (found / 'ComputeRP').is_dir() or not (found / 'GalleryRP').is_dir():
        raise RuntimeError(f'{found} (IMAGEPREP_AZURE_REST_EXAMPLES) does not hold the Azure REST API examples '
                           '(no ComputeRP/ and GalleryRP/ directories)')
    return found


def find_example(directory: str | os.PathLike[str], relpath: str) -> pathlib.Path:
    """Return the example file RELPATH (relative to DIRECTORY, or a bare file name found anywhere below it)."""
    root = pathlib.Path(directory)
    path = root / relpath
    if path.is_file():
        return path
    if '/' not in relpath:
        found = sorted(root.rglob(relpath))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f'{relpath} names several files below {root}: {", ".join(str(item) for item in found)}')
    raise FileNotFoundError(f'no example {relpath} below {root}')


def load_example(directory: str | os.PathLike[str], relpath: str) -> dict[str, t.Any]:
    """Return the parsed example file RELPATH."""
    with open(find_example(directory, relpath), encoding='utf-8') as handle:
        return json.load(handle)


def example_request(directory: str | os.PathLike[str], relpath: str) -> dict[str, t.Any]:
    """Return (a copy of) the request body of the example RELPATH: the one object among its ``parameters``."""
    parameters = load_example(directory, relpath).get('parameters', {})
    bodies = [value for value in parameters.values() if isinstance(value, dict)]
    if len(bodies) != 1:
        raise ValueError(f'{relpath} has {len(bodies)} object parameters, not one request body')
    return copy.deepcopy(bodies[0])


def example_response(directory: str | os.PathLike[str], relpath: str, status: int | str = 200) -> t.Any:
    """Return (a copy of) the response body of the example RELPATH for STATUS (None when it has none)."""
    responses = load_example(directory, relpath).get('responses', {})
    if str(status) not in responses:
        raise KeyError(f'{relpath} has no {status} response (it has {", ".join(responses)})')
    return copy.deepcopy(responses[str(status)].get('body'))


def key_paths(value: t.Any, prefix: str = '') -> set[str]:
    """Return the JSON key paths in VALUE: ``a.b``, list items as ``a.list[].c``.

    The keys inside ``tags`` are data (ARM tags are a map of strings), not shape: ``tags`` counts, its keys do not.
    """
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f'{prefix}.{key}' if prefix else str(key)
            found.add(path)
            if key != 'tags':
                found |= key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            found |= key_paths(item, prefix + '[]')
    return found


def shape_problems(body: t.Any, example_body: t.Any, *more_examples: t.Any) -> list[str]:
    """Return the key paths present in BODY but absent from EXAMPLE_BODY (and MORE_EXAMPLES), outermost only, sorted."""
    known = key_paths(example_body)
    for other in more_examples:
        known |= key_paths(other)
    extra = key_paths(body) - known
    return sorted(path for path in extra
                  if not any(path.startswith(other + '.') or path.startswith(other + '[].') for other in extra))


def _json_type(value: t.Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def _type_ok(expected: str, value: t.Any) -> bool:
    actual = _json_type(value)
    return actual == expected or (expected == 'number' and actual == 'integer')


def _date_time_ok(value: str) -> bool:
    try:
        datetime.datetime.fromisoformat(value.replace('Z', '+00:00').replace('z', '+00:00'))
    except ValueError:
        return False
    return True


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r'(\{[^}]+\})', template)
    pattern = ''.join('[^/]+' if part.startswith('{') else re.escape(part) for part in parts)
    return re.compile(f'^{pattern}$', re.IGNORECASE)


class Operation(t.NamedTuple):
    method: str
    template: str
    regex: re.Pattern[str]
    spec: dict[str, t.Any]
    file: str


class OpenApi:
    """The operations and schemas of the OpenAPI files in an examples directory."""

    def __init__(self, directory: str | os.PathLike[str], files: t.Iterable[str] = SPEC_FILES) -> None:
        self.root = pathlib.Path(directory)
        self.docs: dict[str, dict[str, t.Any]] = {}
        self.operations: list[Operation] = []
        for relpath in files:
            with open(self.root / relpath, encoding='utf-8') as handle:
                doc = json.load(handle)
            self.docs[relpath] = doc
            for template, item in doc.get('paths', {}).items():
                common = item.get('parameters', [])
                for method, spec in item.items():
                    if method == 'parameters':
                        continue
                    spec = dict(spec, parameters=common + spec.get('parameters', []))
                    self.operations.append(Operation(method.upper(), template, _template_regex(template), spec, relpath))

    # --- references

    def _resolve(self, ref: str, file: str) -> Where | None:
        """Return the schema REF points at (relative to FILE), or None for a reference into common-types."""
        target, _sep, pointer = ref.partition('#')
        if target:
            if MISSING_REF in target:
                return None
            file = os.path.normpath(os.path.join(os.path.dirname(file), target))
            if file not in self.docs:
                return None  # a file outside the published set: nothing to check against
        node: t.Any = self.docs[file]
        for part in pointer.strip('/').split('/') if pointer.strip('/') else []:
            node = node[part.replace('~1', '/').replace('~0', '~')]
        return node, file

    def deref(self, schema: Schema, file: str) -> Where | None:
        """Follow $refs from SCHEMA; None when they end in the unpublished common types."""
        seen = 0
        while '$ref' in schema:
            found = self._resolve(schema['$ref'], file)
            if found is None:
                return None
            schema, file = found
            seen += 1
            if seen > MAX_DEPTH:
                raise ValueError(f'$ref loop at {schema}')
        return schema, file

    def members(self, schema: Schema, file: str, depth: int = 0) -> tuple[dict[str, Where], set[str], t.Any]:
        """Return (properties, required names, openness) of an object schema with its allOf parts.

        Openness is False (closed), True (anything else allowed) or a (schema, file) for additionalProperties.
        """
        props: dict[str, Where] = {name: (prop, file) for name, prop in schema.get('properties', {}).items()}
        required = set(schema.get('required', []))
        extra = schema.get('additionalProperties', False)
        openness: t.Any = (extra, file) if isinstance(extra, dict) else bool(extra)
        for part in schema.get('allOf', []):
            found = self.deref(part, file)
            if found is None:
                openness = True
                continue
            if depth > MAX_DEPTH:
                raise ValueError('allOf nesting too deep')
            sub_props, sub_required, sub_open = self.members(found[0], found[1], depth + 1)
            for name, where in sub_props.items():
                props.setdefault(name, where)
            required |= sub_required
            if sub_open and openness is not True:
                openness = sub_open
        return props, required, openness

    # --- operations

    def find(self, method: str, path: str) -> Operation | None:
        """Return the operation for METHOD on PATH (no query), or None when no published path matches."""
        path = path.rstrip('/') or '/'
        for operation in self.operations:
            if operation.method == method.upper() and operation.regex.match(path):
                return operation
        return None

    def _parameters(self, operation: Operation) -> t.Iterator[dict[str, t.Any]]:
        for parameter in operation.spec.get('parameters', []):
            if '$ref' in parameter:
                found = self._resolve(parameter['$ref'], operation.file)
                if found is None:
                    continue
                parameter = found[0]
            yield parameter

    def request_problems(self, method: str, path: str, body: t.Any) -> list[str]:
        """Return what is wrong with BODY as the request body of METHOD PATH ([] when the path is not published)."""
        operation = self.find(method, path)
        if operation is None:
            return []
        parameter = next((item for item in self._parameters(operation) if item.get('in') == 'body'), None)
        if parameter is None:
            return [f'{operation.spec.get("operationId")} takes no request body'] if body not in (None, {}) else []
        if body is None:
            return [f'{operation.spec.get("operationId")}: the request body ({parameter.get("name")}) is required'] \
                if parameter.get('required') else []
        problems: list[str] = []
        self.check(body, parameter['schema'], operation.file, parameter.get('name', 'body'), problems, request=True)
        return problems

    def response_problems(self, method: str, path: str, status: int, body: t.Any) -> list[str]:
        """Return what is wrong with BODY as the STATUS response of METHOD PATH, by the published schema."""
        operation = self.find(method, path)
        if operation is None:
            return []
        response = operation.spec.get('responses', {}).get(str(status))
        if response is None:
            return [f'{operation.spec.get("operationId")} has no {status} response '
                    f'(published: {", ".join(operation.spec.get("responses", {}))})']
        if 'schema' not in response or body is None:
            return []
        problems: list[str] = []
        self.check(body, response['schema'], operation.file, 'response', problems, request=False)
        return problems

    # --- schemas

    def check(self, value: t.Any, schema: Schema, file: str, where: str, problems: list[str],
              request: bool = True, depth: int = 0) -> None:
        """Append to PROBLEMS what is wrong with VALUE by SCHEMA (defined in FILE); WHERE names VALUE."""
        if depth > MAX_DEPTH:
            return
        found = self.deref(schema, file)
        if found is None:
            return
        schema, file = found
        expected = schema.get('type')
        if expected is None and ('properties' in schema or 'allOf' in schema):
            expected = 'object'
        if value is None:
            if schema.get('x-nullable'):
                return
            problems.append(f'{where}: null where {expected or "a value"} is expected')
            return
        if expected and not _type_ok(expected, value):
            problems.append(f'{where}: expected {expected}, got {_json_type(value)} {value!r}'[:300])
            return
        if 'enum' in schema and isinstance(value, (str, int)) and not isinstance(value, bool):
            closed = not schema.get('x-ms-enum', {}).get('modelAsString', False)
            if closed and value not in schema['enum']:
                problems.append(f'{where}: {value!r} is not one of {schema["enum"]} '
                                f'({schema.get("x-ms-enum", {}).get("name", "closed enum")})')
        if isinstance(value, str) and schema.get('format') == 'date-time' and not _date_time_ok(value):
            problems.append(f'{where}: {value!r} is not a date-time')
        if isinstance(value, list) and 'items' in schema:
            for index, item in enumerate(value):
                self.check(item, schema['items'], file, f'{where}[{index}]', problems, request, depth + 1)
        if isinstance(value, dict):
            self._check_object(value, schema, file, where, problems, request, depth)

    def _check_object(self, value: dict[str, t.Any], schema: Schema, file: str, where: str, problems: list[str],
                      request: bool, depth: int) -> None:
        props, required, openness = self.members(schema, file)
        if not props and not schema.get('allOf') and 'additionalProperties' not in schema:
            return  # a free-form object
        for name in sorted(required):
            if name in value:
                continue
            prop = props.get(name)
            if prop and self._read_only(*prop):
                continue
            if request or prop:
                problems.append(f'{where}.{name}: required property missing')
        for name, item in value.items():
            path = f'{where}.{name}'
            if name in props:
                prop_schema, prop_file = props[name]
                if request and self._read_only(prop_schema, prop_file):
                    problems.append(f'{path}: readOnly property sent')
                    continue
                self.check(item, prop_schema, prop_file, path, problems, request, depth + 1)
            elif isinstance(openness, tuple):
                self.check(item, openness[0], openness[1], path, problems, request, depth + 1)
            elif not openness:
                problems.append(f'{path}: unknown property (the schema defines {", ".join(sorted(props))})')

    def _read_only(self, schema: Schema, file: str) -> bool:
        if schema.get('readOnly'):
            return True
        found = self.deref(schema, file)
        return bool(found and found[0].get('readOnly'))
