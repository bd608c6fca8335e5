"""A user's own code named on the command line: `PATH.py:NAME` or `package.module:NAME`.

`--model` and `--data` name a function this way. Loading it is the one place that imports user
code, so that every refusal is one line naming the spec (never a traceback of the user's file)
and so that a result can record which code produced it: the function's name and a SHA-256 of
the source file it came from.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.util
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Loaded:
    """A function loaded from a spec, with what identifies the code behind it."""

    obj: Any
    name: str  # NAME, as the spec gives it
    path: str  # the source file, absolute (the spec's own, where a carried copy was read)
    sha256: str  # of the source file's bytes
    beside: tuple[Path, ...] = ()  # a PATH.py's directories, whose modules it may not import


def is_spec(value) -> bool:
    """Whether a config value names user code (`PATH.py:NAME` or `package.module:NAME`) rather
    than a built-in name or a data file: the part after the last colon is an identifier and the
    part before it a .py path or a dotted module name."""
    if not isinstance(value, str):
        return False
    where, sep, name = value.rpartition(":")
    return bool(sep and where and name.isidentifier()) and (
        where.endswith(".py") or all(p.isidentifier() for p in where.split(".")))


def split(spec: str, what: str) -> tuple[str, str]:
    """`PATH.py:NAME` or `package.module:NAME` -> (where, NAME), refusing any other shape."""
    if not is_spec(spec):
        raise ValueError(f"{what} {spec!r} must be PATH.py:NAME or package.module:NAME")
    where, _, name = str(spec).rpartition(":")
    return where, name


def source_sha256(path: str | Path) -> str:
    """The SHA-256 of a source file's bytes: the identity of the code a result came from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# Why a PATH.py file may not import the modules beside it, and what to do instead.
ONE_FILE = ("a PATH.py:NAME file must be self-contained, since milr hashes and carries that one "
            "file and not the modules beside it: put that code in the file, or install it as a "
            "package and name it package.module:NAME")


def _imported_from(directories: tuple[Path, ...], names) -> str | None:
    """The first top-level module among `names` (dotted names too) that was imported from one
    of `directories`, if any: a module or package lying beside a PATH.py file."""
    for top in dict.fromkeys(str(n).partition(".")[0] for n in names):
        module = sys.modules.get(top)
        file = getattr(module, "__file__", None)
        places = [Path(p).parent for p in getattr(module, "__path__", None) or []] or (
            [Path(file).parent] if file else [])
        if any(p.resolve() in directories for p in places):
            return top
    return None


def _origin(value) -> str | None:
    """The module a value of a namespace comes from (a module's own name), if it says."""
    try:
        name = value.__name__ if isinstance(value, ModuleType) else value.__module__
    except Exception:  # an object without one, or whose attributes raise
        return None
    return name if isinstance(name, str) else None


def _beside(who: str, top: str) -> ValueError:
    return ValueError(f"{who} imports {top!r}, a module beside it: {ONE_FILE}")


def _sibling_import(who: str, directories: tuple[Path, ...], names) -> ValueError | None:
    """The refusal (`ONE_FILE`) of a PATH.py file that imported one of `names` from beside it."""
    top = _imported_from(directories, names) if directories else None
    return None if top is None else _beside(who, top)


def _user_error(e: BaseException, who: str, directories: tuple[Path, ...]) -> ValueError:
    """What a user's code raised as one line; a module beside its file that it could not
    import (not on sys.path), as the one-file rule."""
    if isinstance(e, KeyboardInterrupt):
        raise e
    top = str(getattr(e, "name", None) or "").partition(".")[0]
    if isinstance(e, ModuleNotFoundError) and top and any(
            (d / f"{top}.py").is_file() or (d / top).is_dir() for d in directories):
        return _beside(who, top)
    return ValueError(f"{who} raised {type(e).__name__}: {e}")


def _module_from_file(path: Path, what: str, spec: str, directories: tuple[Path, ...]):
    """Import a .py file under a name of its own (a hash of its path and content), once per
    path and content: an edited file is a new module, and an identical file elsewhere another
    (its `__file__` its own). It may not import a module from `directories` (`ONE_FILE`)."""
    if not path.is_file():
        raise ValueError(f"{what} {spec!r}: no such file {str(path)!r}")
    key = hashlib.sha256(f"{path.resolve()}\0{source_sha256(path)}".encode()).hexdigest()
    module_name = f"_milr_user_{key[:16]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"{what} {spec!r}: {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader_spec)
    before = set(sys.modules)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as e:  # the user's code: any failure is one line, never a traceback
        del sys.modules[module_name]
        raise _user_error(e, f"{what} {spec!r}: importing it", directories) from None
    # what it imported now, and the modules its names come from (imported before or now)
    used = (set(sys.modules) - before) | {_origin(v) for v in vars(module).values()}
    refusal = _sibling_import(f"{what} {spec!r}: it", directories,
                              sorted(n for n in used - {module_name, None}))
    if refusal is not None:
        del sys.modules[module_name]
        raise refusal
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
    beside: tuple[Path, ...] = ()
    if where.endswith(".py"):
        named, source = _named(where), _readable(where)  # the spec's file; where it is read
        beside = tuple(dict.fromkeys((named.parent, source.resolve().parent)))
        module = _module_from_file(source, what, spec, beside)
    else:
        module = _module_from_name(where, what, spec)
        file = getattr(module, "__file__", None)
        if not file or not Path(file).is_file():
            raise ValueError(f"{what} {spec!r}: its module has no source file to identify it by")
        named = source = Path(file).resolve()
    obj = getattr(module, name, None)
    if obj is None:
        raise ValueError(f"{what} {spec!r}: {where!r} defines no {name!r}")
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: {name!r} is a {type(obj).__name__}, not a function")
    return Loaded(obj, name, str(named), source_sha256(source), beside)


def call(loaded: Loaded, what: str, *args, **kwargs) -> Any:
    """Call a loaded function; whatever it raises becomes one line naming it, and a module
    beside a PATH.py file that the call imports is refused (`ONE_FILE`)."""
    before = set(sys.modules)
    try:
        out = loaded.obj(*args, **kwargs)
    except BaseException as e:
        raise _user_error(e, f"{what} {loaded.name!r}", loaded.beside) from None
    refusal = _sibling_import(f"{what} {loaded.name!r}", loaded.beside,
                              sorted(set(sys.modules) - before))
    if refusal is not None:
        raise refusal
    return out


# --- a spec's file carried to another machine (a sweep's Ray tasks) ---------------------------

_CARRIED: dict[str, str] = {}  # a spec file's path -> where this process keeps its carried copy
_COPIES: list[str] = []  # this process's directory of copies, once made


def carry(value) -> tuple[str, str, bytes] | None:
    """(path, SHA-256, bytes) of the file a `PATH.py:NAME` value names, to travel with a task;
    None for any other value (a package.module spec must be installed where the task runs)."""
    where = str(value).rpartition(":")[0]
    if not is_spec(value) or not where.endswith(".py"):
        return None
    path = _named(where)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{value!r}: cannot read {str(path)!r}: {e.strerror or e}") from None
    return str(path), hashlib.sha256(data).hexdigest(), data


def _named(where: str) -> Path:
    """The file a spec's PATH.py names, absolute: the key its carried copy is kept under."""
    return Path(where).expanduser().resolve()


def _readable(where: str) -> Path:
    """Where this process reads a spec's PATH.py: a carried copy where the sweep's file is not
    here with its hash (`receive`), else the file itself."""
    named = _named(where)
    return Path(_CARRIED.get(str(named), named))


def receive(carried) -> None:
    """Where a carried file is not at its path with its hash (another machine, or edited since
    the sweep began), load its specs from a copy: the code the sweep started with runs."""
    for path, digest, data in carried:
        if Path(path).is_file() and source_sha256(path) == digest:
            _CARRIED.pop(path, None)
            continue
        if not _COPIES:
            _COPIES.append(tempfile.mkdtemp(prefix="milr-carried-"))
            atexit.register(shutil.rmtree, _COPIES[0], True)
        copy = Path(_COPIES[0]) / digest / Path(path).name
        if not copy.is_file():
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(data)
        _CARRIED[path] = str(copy.resolve())


# Config fields whose value may name a user's function (a spec): results record, beside each,
# the SHA-256 of the source behind it in the column `sha256_column(name)`.
SPEC_FIELDS = ("model", "dataset")


def sha256_column(name: str) -> str:
    """The results column holding the source hash of config field `name`'s spec."""
    return f"{name}_sha256"


def source_path(spec: str, what: str) -> Path:
    """The source file a spec's function lives in, without running it (a dotted module's
    parent packages are imported to find it)."""
    where, _ = split(spec, what)
    if where.endswith(".py"):
        path = _readable(where)
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
    absent or names no code); a result records `data.lookup.identities`, where a dataset's is
    that of its source and the arrays it returns."""
    out: dict[str, str | None] = {}
    for name in SPEC_FIELDS:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        out[sha256_column(name)] = (source_sha256(source_path(value, f"--{name}"))
                                    if is_spec(value) else None)
    return out
