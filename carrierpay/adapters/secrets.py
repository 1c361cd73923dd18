"""Secrets named in specs, resolved from explicit values, the environment or CARRIERPAY_SECRETS_FILE."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from carrierpay.parsing import load_json, load_yaml

SECRETS_FILE_VARIABLE = "CARRIERPAY_SECRETS_FILE"


class MissingSecret(KeyError):
    def __str__(self) -> str:
        return (
            f"secret {self.args[0]!r} is not set: export it as an environment variable or add it to the "
            f"file named by {SECRETS_FILE_VARIABLE}"
        )


class Secrets:
    """Looks secrets up by name: explicit values first, then the environment, then the secrets file.

    Every value handed out is remembered so the redactor can scrub it from logged traffic,
    wherever it ends up (a header, a URL, an XML body).
    """

    def __init__(
        self,
        values: Mapping[str, str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        secrets_file: str | Path | None = None,
    ) -> None:
        self._values = dict(values or {})
        self._environ = os.environ if environ is None else environ
        file_name = secrets_file or self._environ.get(SECRETS_FILE_VARIABLE)
        self._file_values = _read_secrets_file(Path(file_name)) if file_name else {}
        self.revealed: set[str] = set()

    @classmethod
    def from_environment(cls) -> Secrets:
        return cls()

    @classmethod
    def of(cls, secrets: Secrets | Mapping[str, str] | None) -> Secrets:
        """`secrets` itself when it is a Secrets, else one over the values given."""
        return secrets if isinstance(secrets, Secrets) else cls(secrets)

    def get(self, name: str) -> str:
        for source in (self._values, self._environ, self._file_values):
            if name in source and source[name] is not None:
                value = str(source[name])
                self.remember(value)
                return value
        raise MissingSecret(name)

    def resolve(self, value: Any) -> Any:
        """A literal stays as it is; `{secret: NAME}` becomes the secret's value."""
        if isinstance(value, Mapping) and set(value) == {"secret"}:
            return self.get(value["secret"])
        return value

    def remember(self, value: str) -> None:
        # Very short values would make the redactor scrub innocent digits out of every log line.
        if value and len(value) >= 4:
            self.revealed.add(value)


def _read_secrets_file(path: Path) -> dict[str, str]:
    text = path.read_text()
    data = load_json(text, str(path)) if path.suffix == ".json" else load_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a secrets file must hold a map of NAME: value")
    return {str(key): str(value) for key, value in data.items()}
