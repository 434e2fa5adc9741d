"""Recipe files as run: the validated recipe, the exact text it came from and its SHA-256.

The one place a recipe file is read (``hypoxia run``, ``simulate``, ``check``, ``sweep``): the
journal keeps the text and hash of every run, so a record can show exactly what ran.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from common.config_errors import ConfigError, validate_model
from controller.core.recipe import Recipe


@dataclass(slots=True)
class RecipeSource:
    """A recipe with the exact text it was loaded from and its SHA-256."""

    recipe: Recipe
    text: str
    sha256: str

    @classmethod
    def from_file(cls, path: Path) -> RecipeSource:
        """Load and validate a recipe file; :class:`ConfigError` names the file and field."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(str(path), "", "file not found") from None
        try:
            text = raw.decode()
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
        return cls(validate_model(str(path), data, Recipe), text, hashlib.sha256(raw).hexdigest())
