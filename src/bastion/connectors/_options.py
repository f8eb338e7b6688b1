"""Options of a connector kind, checked the way every option of Bastion is: a typo or a wrong type
fails loudly, naming the option and the kind."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bastion.core.errors import ConfigError

Options = TypeVar("Options", bound=BaseModel)


def checked(model: type[Options], kind: str, options: dict[str, Any]) -> Options:
    """``options`` as ``model``; a :class:`ConfigError` naming each bad option otherwise.

    >>> from pydantic import BaseModel, ConfigDict
    >>> class O(BaseModel):
    ...     model_config = ConfigDict(extra="forbid")
    ...     depth: int = 1
    >>> checked(O, "web", {"depht": 2})
    Traceback (most recent call last):
    bastion.core.errors.ConfigError: invalid option of a web source: depht: unknown option (known: depth)
    """
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        known = ", ".join(sorted(model.model_fields))
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"{name}: unknown option (known: {known})")
            else:
                problems.append(f"{name}: {err['msg']} (got {err.get('input')!r:.80})")
        raise ConfigError(f"invalid option{'s' if len(problems) > 1 else ''} of {_article(kind)} {kind} source: "
                          + "; ".join(problems)) from None


def comma_list(value: Any) -> Any:
    """A list option given as text on the command line (``-o include=*.md,docs/**``) as a list.

    >>> comma_list("*.md, docs/**"), comma_list(["a"])
    (['*.md', 'docs/**'], ['a'])
    """
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename, so a killed sync leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _article(word: str) -> str:
    """``"an"`` before a vowel sound of the kinds' names (imap and s3 take "an"), else ``"a"``."""
    return "an" if word[:1].lower() in "aeiou" or word.lower().startswith("s3") else "a"
