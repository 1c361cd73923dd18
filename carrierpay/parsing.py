"""Parser errors as one line: where (line, column) and what is wrong, without the parser's internals.

PyYAML's and json's messages span several lines (a caret under a copy of the input, the parser's
state); an operator needs the place and the problem. Callers put the file or option name in front.
"""

from __future__ import annotations

import json

import yaml


def yaml_problem(exc: yaml.YAMLError) -> str:
    """'line 3, column 5: mapping values are not allowed here' (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and (context_mark.line, context_mark.column) != (mark.line, mark.column):
        problem += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        problem += f" ({context})"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def json_problem(exc: json.JSONDecodeError) -> str:
    """'column 2: Expecting property name enclosed in double quotes' (the line too when there are several)."""
    where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno}, column {exc.colno}"
    return f"{where}: {exc.msg}"


def load_yaml(text: str, source: str):
    """yaml.safe_load, its errors as ValueError('<source>: not valid YAML at line …')."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML at {yaml_problem(exc)}") from None


def load_json(text: str, source: str):
    """json.loads, its errors as ValueError('<source>: not valid JSON at column …')."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON at {json_problem(exc)}") from None
