"""What an image is built from, read without a container engine: Dockerfile instructions,
image references, and the pinned requirement files the Dockerfiles install with `--no-deps`.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)
IMAGE = re.compile(
    r"(?P<repository>[^:@\s]+)(?::(?P<tag>[^@\s]+))?(?:@sha256:(?P<digest>[0-9a-f]{64}))?"
)
"""An image reference: repository, then an optional tag and an optional sha256 digest."""


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; comments dropped, continuations joined."""
    parsed, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        parsed.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return parsed


def requirement_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a requirements file."""
    return {canonicalize_name(name): version for name, version in PIN.findall(path.read_text())}


def installed_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Canonical names of `requirements` and everything they need, extras included, as the
    installed distributions' metadata declares it."""
    closure: dict[str, set[str]] = {}
    pending = [(requirement.name, set(requirement.extras)) for requirement in requirements]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key in closure and extras <= closure[key]:
            continue
        closure.setdefault(key, set()).update(extras)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            wanted = closure[key] | {""}
            if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                pending.append((requirement.name, set(requirement.extras)))
    return set(closure)
