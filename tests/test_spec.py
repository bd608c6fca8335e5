"""A user's function named as PATH.py:NAME or package.module:NAME: loaded, identified, refused."""

import hashlib

import pytest

from milr.base import spec


def _write(tmp_path, text, name="f.py"):
    tmp_path.mkdir(exist_ok=True)
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_a_file_function_with_its_source_hash(tmp_path):
    p = _write(tmp_path, "def make(a):\n    return a + 1\n")
    got = spec.load(f"{p}:make", "--model")
    assert got.obj(1) == 2 and got.name == "make" and got.path == str(p.resolve())
    assert got.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_another_content_is_another_module_and_identity(tmp_path):
    p = _write(tmp_path, "def make():\n    return 1\n")
    first = spec.load(f"{p}:make", "--model")
    p.write_text("def make():\n    return 2\n")
    second = spec.load(f"{p}:make", "--model")
    assert (first.obj(), second.obj()) == (1, 2) and first.sha256 != second.sha256


def test_loads_a_dotted_module():
    got = spec.load("milr.base.spec:split", "--model")
    assert got.obj is spec.split and got.path.endswith("spec.py")


@pytest.mark.parametrize("text,target,words", [
    (None, "nofile.py:make", "no such file"),
    ("def make(): pass\n", "{p}", "must be PATH.py:NAME"),
    ("def make(): pass\n", "{p}:", "must be PATH.py:NAME"),
    ("def make(): pass\n", "{p}:not-a-name", "must be PATH.py:NAME"),
    ("raise RuntimeError('boom')\n", "{p}:make", "importing it raised RuntimeError: boom"),
    ("import no_such_module_here\n", "{p}:make", "ModuleNotFoundError"),
    ("def other(): pass\n", "{p}:make", "defines no 'make'"),
    ("make = 3\n", "{p}:make", "is a int, not a function"),
    (None, "no_such_package_xyz.mod:make", "ModuleNotFoundError"),
])
def test_refusals_are_one_line_naming_the_spec(tmp_path, text, target, words):
    p = _write(tmp_path, text) if text is not None else tmp_path / "f.py"
    target = target.format(p=p)
    with pytest.raises(ValueError) as e:
        spec.load(target, "--model")
    message = str(e.value)
    assert words in message and "--model" in message and "\n" not in message


def test_a_raising_function_is_one_line(tmp_path):
    p = _write(tmp_path, "def make():\n    raise KeyError('x')\n")
    with pytest.raises(ValueError, match="--model 'make' raised KeyError"):
        spec.call(spec.load(f"{p}:make", "--model"), "--model")


def test_is_spec_tells_a_function_from_a_name_or_a_file():
    """A config value that names a user's function (issue 32: --dataset, --model)."""
    assert all(spec.is_spec(v) for v in ("d.py:make", "/a/b.py:f", "pkg.mod:make_data"))
    assert not any(spec.is_spec(v) for v in ("gaussians", "x.npz", "d.py:", ":make",
                                             "C:\\data\\x.npz", "d.py:1x", None, 3))


def test_one_content_at_two_paths_is_two_modules(tmp_path):
    """A function that reads a file beside its own (`__file__`) reads its own directory's, even
    where an identical file elsewhere was loaded first."""
    text = "from pathlib import Path\n\n\ndef where():\n    return Path(__file__).parent\n"
    a, b = _write(tmp_path, text, "a.py"), _write(tmp_path / "b", text, "a.py")
    assert [spec.load(f"{p}:where", "--model").obj() for p in (a, b)] == [a.parent, b.parent]


# --- a PATH.py file must be self-contained: milr hashes and carries that one file -------------

SIBLING = "class Block:\n    pass\n"


@pytest.mark.parametrize("importing", ["from {m} import Block", "import {m}",
                                       "import {m}.inner"])
def test_a_module_beside_the_file_is_refused_whether_or_not_it_imports(tmp_path, monkeypatch,
                                                                        importing):
    """Not on sys.path: one line saying why, not Python's bare ModuleNotFoundError; on sys.path
    (the working directory under `python -m milr`): refused as well, since the module beside
    it would be neither hashed nor carried."""
    m = f"sib_{abs(hash((str(tmp_path), importing))) % 10**8}"
    if "inner" in importing:
        (tmp_path / m).mkdir()
        (tmp_path / m / "__init__.py").write_text("")
        (tmp_path / m / "inner.py").write_text(SIBLING)
    else:
        _write(tmp_path, SIBLING, f"{m}.py")
    p = _write(tmp_path, importing.format(m=m) + "\n\n\ndef make():\n    return 1\n")
    for attempt in ("missing", "importable"):
        with pytest.raises(ValueError) as e:
            spec.load(f"{p}:make", "--model")
        message = str(e.value)
        assert f"imports {m!r}, a module beside it" in message, (attempt, message)
        assert "must be self-contained" in message and "package.module:NAME" in message
        assert "\n" not in message
        monkeypatch.syspath_prepend(str(tmp_path))


def test_a_module_beside_the_file_imported_when_called_is_refused(tmp_path, monkeypatch):
    m = f"lazy_{abs(hash(str(tmp_path))) % 10**8}"
    _write(tmp_path, SIBLING, f"{m}.py")
    p = _write(tmp_path, f"def make():\n    import {m}\n    return {m}.Block()\n")
    loaded = spec.load(f"{p}:make", "--model")
    with pytest.raises(ValueError, match=f"imports '{m}', a module beside it"):
        spec.call(loaded, "--model")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=f"imports '{m}', a module beside it"):
        spec.call(loaded, "--model")


def test_modules_from_elsewhere_are_what_they_were(tmp_path):
    """The standard library, installed packages, and a module of the same name found elsewhere
    are no siblings."""
    p = _write(tmp_path, "import json\n\nimport numpy\n\n\ndef make():\n"
                         "    import hashlib\n    return json.dumps([numpy.pi])\n")
    assert spec.call(spec.load(f"{p}:make", "--model"), "--model") == "[3.141592653589793]"
