"""A user's own code named on the command line: `PATH.py:NAME` or `package.module:NAME`.

`--model` and `--data` name a function this way. Loading it is the one place that imports user
code, so that every refusal is one line naming the spec (never a traceback of the user's file)
and so that a result can record which code produced it: the function's name and a SHA-256 of
the source file it came from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Loaded:
    """A function loaded from a spec, with what identifies the code behind it."""

    obj: Any
    name: str  # NAME, as the spec gives it
    path: str  # the source file, absolute
    sha256: str  # of the source file's bytes


def split(spec: str, what: str) -> tuple[str, str]:
    """`PATH.py:NAME` or `package.module:NAME` -> (where, NAME), refusing any other shape."""
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"{what} {spec!r} must be PATH.py:NAME or package.module:NAME")
    return where, name


def source_sha256(path: str | Path) -> str:
    """The SHA-256 of a source file's bytes: the identity of the code a result came from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _module_from_file(path: Path, what: str, spec: str):
    """Import a .py file under a name of its own (its content's hash), once per content."""
    if not path.is_file():
        raise ValueError(f"{what} {spec!r}: no such file {str(path)!r}")
    digest = source_sha256(path)
    module_name = f"_milr_user_{digest[:16]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"{what} {spec!r}: {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as e:  # the user's code: any failure is one line, never a traceback
        del sys.modules[module_name]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ValueError(f"{what} {spec!r}: importing it raised "
                         f"{type(e).__name__}: {e}") from None
    return module


def _module_from_name(dotted: str, what: str, spec: str):
    """Import `package.module`, every failure one line."""
    try:
        return importlib.import_module(dotted)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ValueError(f"{what} {spec!r}: importing {dotted!r} raised "
                         f"{type(e).__name__}: {e}") from None


def load(spec: str, what: str) -> Loaded:
    """The callable a spec names, with its source's identity; ValueError (one line) otherwise.

    `what` names the option in messages (e.g. "--model")."""
    where, name = split(spec, what)
    if where.endswith(".py"):
        module = _module_from_file(Path(where).expanduser().resolve(), what, spec)
    else:
        module = _module_from_name(where, what, spec)
    source = getattr(module, "__file__", None)
    if not source or not Path(source).is_file():
        raise ValueError(f"{what} {spec!r}: its module has no source file to identify it by")
    obj = getattr(module, name, None)
    if obj is None:
        raise ValueError(f"{what} {spec!r}: {where!r} defines no {name!r}")
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: {name!r} is a {type(obj).__name__}, not a function")
    path = str(Path(source).resolve())
    return Loaded(obj, name, path, source_sha256(path))


def call(loaded: Loaded, what: str, *args, **kwargs) -> Any:
    """Call a loaded function; whatever it raises becomes one line naming it."""
    try:
        return loaded.obj(*args, **kwargs)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ValueError(f"{what} {loaded.name!r} raised {type(e).__name__}: {e}") from None


# Config fields whose value may name a user's function (a spec): results record, beside each,
# the SHA-256 of the source behind it in the column `sha256_column(name)`.
SPEC_FIELDS = ("model", "dataset")


def is_spec(value) -> bool:
    """Whether a config value names user code (`PATH.py:NAME` or `package.module:NAME`) rather
    than a built-in name or a data file: the part after the last colon is an identifier and the
    part before it a .py path or a dotted module name."""
    if not isinstance(value, str):
        return False
    where, sep, name = value.rpartition(":")
    return bool(sep and where and name.isidentifier()) and (
        where.endswith(".py") or all(p.isidentifier() for p in where.split(".")))


def sha256_column(name: str) -> str:
    """The results column holding the source hash of config field `name`'s spec."""
    return f"{name}_sha256"


def source_path(spec: str, what: str) -> Path:
    """The source file a spec's function lives in, without running it (a dotted module's
    parent packages are imported to find it)."""
    where, _ = split(spec, what)
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
    else:
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError) as e:
            raise ValueError(f"{what} {spec!r}: cannot find {where!r} ({e})") from None
        if found is None or not found.origin or not Path(found.origin).is_file():
            raise ValueError(f"{what} {spec!r}: no module {where!r} with a source file")
        path = Path(found.origin).resolve()
    if not path.is_file():
        raise ValueError(f"{what} {spec!r}: no such file {str(path)!r}")
    return path


def identities(config) -> dict[str, str | None]:
    """The source hash of every spec among a config's SPEC_FIELDS (None where the field is
    absent or names no code): what a result row and --json record beside the config."""
    out: dict[str, str | None] = {}
    for name in SPEC_FIELDS:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        out[sha256_column(name)] = (source_sha256(source_path(value, f"--{name}"))
                                    if is_spec(value) else None)
    return out
