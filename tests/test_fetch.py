"""`milr data fetch` against a local HTTP server on 127.0.0.1, and `milr data list`.

Small fixture files in the official formats are served; their checksums are injected into the
table of milr.data.fetch. Nothing reaches the real network and nothing is written outside tmp_path.
"""

import gzip
import hashlib
import io
import socket
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from milr.cli.datacmd import data_app
from milr.data import fetch, formats, lookup, survey
from milr.data.fetch import FetchError, Remote, Source

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]


def idx_bytes(arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def idx_files(n_train=60, n_eval=20, seed=0):
    """The four gzipped IDX files of an MNIST-like set, as {file name: bytes}."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_eval, 28, 28)), np.arange(n_eval) % 10]
    return {f"{n}.gz": gzip.compress(idx_bytes(a), mtime=0)
            for n, a in zip(IDX_NAMES, arrays, strict=True)}


def cifar_archive(extra=()):
    """A cifar-10-binary.tar.gz with 3 records per batch, plus `extra` (name, bytes, type)."""
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [*formats.CIFAR_TRAIN, formats.CIFAR_TEST, "batches.meta.txt"]:
            rec = rng.integers(0, 256, (3, formats.CIFAR_RECORD)).astype(np.uint8)
            rec[:, 0] = [0, 1, 2]
            add(tar, f"cifar-10-batches-bin/{name}", rec.tobytes())
        for name, payload, kind in extra:
            add(tar, name, payload, kind)
    return buf.getvalue()


def add(tar, name, payload, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(payload) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


class Server:
    """Serves `files` with Range support; can drop a file mid-way or fail with a status."""

    def __init__(self):
        self.files, self.log = {}, []
        self.drop_after = {}  # file -> bytes sent before the connection is cut (once)
        self.fail = {}  # file -> list of HTTP statuses to answer before serving it
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.log.append((name, self.headers.get("Range")))
                if server.fail.get(name):
                    self.send_error(server.fail[name].pop(0))
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop_after.pop(name, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def serve(self, name, files):
        """Publish `files` for data set `name` and inject their sizes and checksums."""
        self.files.update(files)
        remotes = tuple(Remote(f, len(b), hashlib.sha256(b).hexdigest()) for f, b in files.items())
        fetch.SOURCES[name] = Source(self.url, remotes, fetch.SOURCES[name].subdir)
        return remotes


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(fetch, "SOURCES", dict(fetch.SOURCES))
    monkeypatch.setattr(fetch, "BACKOFF", 0.0)
    monkeypatch.setattr(fetch, "TIMEOUT", 5.0)
    monkeypatch.setattr(lookup, "_CACHE", {})
    monkeypatch.setattr(lookup, "default_roots", lambda: [])
    monkeypatch.setattr(lookup, "SYSTEM_DIRS", {})
    monkeypatch.delenv("MILR_DATA", raising=False)
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join(timeout=5)


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_fetch_downloads_verifies_and_load_finds_it(server, tmp_path):
    server.serve("mnist", idx_files())
    seen = []
    res = fetch.fetch("mnist", tmp_path, progress=lambda f, done, total: seen.append((f, done,
                                                                                      total)))
    assert res.where == tmp_path / "mnist" and len(res.downloaded) == 4
    assert leftovers(tmp_path) == sorted(f"{n}.gz" for n in IDX_NAMES)  # no .part left
    size = len(server.files["train-images-idx3-ubyte.gz"])
    assert ("train-images-idx3-ubyte.gz", size, size) in seen
    ds = lookup.load("mnist", tmp_path)
    assert ds.x_train.shape == (60, 784) and ds.classes == 10
    n = len(server.log)
    again = fetch.fetch("mnist", tmp_path)
    assert again.downloaded == [] and len(again.present) == 4 and len(server.log) == n


def test_wrong_checksum_keeps_nothing(server, tmp_path):
    server.serve("mnist", idx_files())
    src = fetch.SOURCES["mnist"]
    bad = Remote(src.files[1].file, src.files[1].size, "0" * 64)
    fetch.SOURCES["mnist"] = Source(src.base, (src.files[0], bad, *src.files[2:]), src.subdir)
    with pytest.raises(FetchError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/train-"
                                         r"labels-idx1-ubyte\.gz: SHA-256 \w+, expected 0{64}; "
                                         "the download was deleted"):
        fetch.fetch("mnist", tmp_path)
    assert leftovers(tmp_path) == ["train-images-idx3-ubyte.gz"]  # verified before; bad one gone


def test_dropped_connection_then_rerun_resumes(server, tmp_path, monkeypatch):
    server.serve("mnist", idx_files())
    monkeypatch.setattr(fetch, "RETRIES", 1)
    big = "train-images-idx3-ubyte.gz"
    server.drop_after[big] = 5000
    with pytest.raises(FetchError, match=f"cannot download {server.url}{big} after 1 attempts: "
                                         "IncompleteRead"):
        fetch.fetch("mnist", tmp_path)
    part = tmp_path / "mnist" / f"{big}.part"
    assert part.stat().st_size == 5000 and not (tmp_path / "mnist" / big).exists()
    res = fetch.fetch("mnist", tmp_path)
    assert (big, "bytes=5000-") in server.log  # resumed, not restarted
    assert len(res.downloaded) == 4 and not part.exists()
    assert lookup.load("mnist", tmp_path).x_train.shape == (60, 784)


def test_rerun_restarts_when_the_server_ignores_ranges(server, tmp_path, monkeypatch):
    server.serve("mnist", idx_files())
    monkeypatch.setattr(fetch, "RETRIES", 1)
    big = "train-images-idx3-ubyte.gz"
    server.drop_after[big] = 5000
    with pytest.raises(FetchError):
        fetch.fetch("mnist", tmp_path)
    server.ignore_range = True
    fetch.fetch("mnist", tmp_path)
    assert (tmp_path / "mnist" / big).read_bytes() == server.files[big]


def test_transient_errors_are_retried_a_bounded_number_of_times(server, tmp_path, monkeypatch):
    server.serve("mnist", idx_files())
    monkeypatch.setattr(fetch, "RETRIES", 3)
    server.fail["train-labels-idx1-ubyte.gz"] = [503, 500]
    server.drop_after["t10k-images-idx3-ubyte.gz"] = 100
    assert len(fetch.fetch("mnist", tmp_path).downloaded) == 4
    server.fail["t10k-labels-idx1-ubyte.gz"] = [503] * 3
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FetchError, match="after 3 attempts: .*Service Unavailable"):
        fetch.fetch("mnist", tmp_path)
    assert [n for n, _ in server.log].count("t10k-labels-idx1-ubyte.gz") == 1 + 3


def test_not_found_on_the_server_is_not_retried(server, tmp_path):
    server.serve("mnist", idx_files())
    del server.files["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(FetchError, match=r"t10k-labels-idx1-ubyte\.gz: HTTP 404"):
        fetch.fetch("mnist", tmp_path)
    assert [n for n, _ in server.log].count("t10k-labels-idx1-ubyte.gz") == 1


def test_offline_is_one_line(server, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(fetch, "RETRIES", 2)
    with pytest.raises(FetchError, match=r"after 2 attempts: ConnectionRefusedError.*offline\? "
                                         r"the mirror down\?"):  # a mirror was given
        fetch.fetch("fashion-mnist", tmp_path, mirror=f"http://127.0.0.1:{port}")
    assert leftovers(tmp_path) == []


def test_mirror_is_used_and_checked(server, tmp_path):
    files = idx_files(seed=3)
    server.serve("fashion-mnist", files)
    fetch.SOURCES["fashion-mnist"] = Source("http://invalid.example/",
                                            fetch.SOURCES["fashion-mnist"].files, "fashion-mnist")
    fetch.fetch("fashion-mnist", tmp_path, mirror=server.url.rstrip("/"))
    assert lookup.locate("fashion-mnist", tmp_path).where == tmp_path / "fashion-mnist"
    with pytest.raises(FetchError, match="mirror must be an http"):
        fetch.fetch("fashion-mnist", tmp_path, mirror="ftp://x")


def test_unwritable_target_is_one_line(server, tmp_path):
    server.serve("mnist", idx_files())
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(FetchError, match=f"cannot write to {tmp_path / 'file' / 'mnist'}"):
        fetch.fetch("mnist", tmp_path / "file")
    assert server.log == []  # refused before any download


def test_cifar_archive_is_extracted_safely(server, tmp_path):
    evil = [("../evil.bin", b"x", tarfile.REGTYPE),
            ("cifar-10-batches-bin/../../evil2.bin", b"x", tarfile.REGTYPE),
            ("/tmp/evil3.bin", b"x", tarfile.REGTYPE),
            ("cifar-10-batches-bin/link", b"", tarfile.SYMTYPE),
            ("cifar-10-batches-py/data_batch_1", b"\x80\x04pickle", tarfile.REGTYPE)]
    server.serve("cifar10", {"cifar-10-binary.tar.gz": cifar_archive(evil)})
    root = tmp_path / "root"
    res = fetch.fetch("cifar10", root)
    assert res.where == root / "cifar-10-batches-bin"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_file()) == sorted(f"root/cifar-10-batches-bin/{n}" for n in [
        *formats.CIFAR_TRAIN, formats.CIFAR_TEST, "batches.meta.txt", fetch.MANIFEST])
    ds = lookup.load("cifar10", root)
    assert ds.x_train.shape == (15, 3072) and ds.y_eval.tolist() == [0, 1, 2]
    verdict = survey.checksum(lookup.locate("cifar10", root))
    assert verdict == "ok (extracted from the verified archive)"
    n = len(server.log)
    assert fetch.fetch("cifar10", root).present and len(server.log) == n  # nothing downloaded


def test_cifar_archive_without_batches_is_refused(server, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        add(tar, "cifar-10-batches-py/data_batch_1", b"\x80\x04")
    server.serve("cifar10", {"cifar-10-binary.tar.gz": buf.getvalue()})
    with pytest.raises(FetchError, match="lacks data_batch_1.bin.*not CIFAR-10's binary version"):
        fetch.fetch("cifar10", tmp_path)


def test_unknown_name_is_refused():
    with pytest.raises(FetchError, match="gaussians is generated"):
        fetch.fetch("gaussians")


# --- milr data list: checksums against the published ones -------------------------------------


def test_checksum_of_published_files_matches_and_a_changed_file_does_not(server, tmp_path):
    server.serve("mnist", idx_files())
    fetch.fetch("mnist", tmp_path)
    assert survey.checksum(lookup.locate("mnist", tmp_path)) == "ok"
    p = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), mtime=1))  # same content
    assert (survey.checksum(lookup.locate("mnist", tmp_path))
            == "no match: t10k-labels-idx1-ubyte.gz")


def test_checksum_of_recompressed_copy_is_checked_on_its_content(tmp_path, monkeypatch):
    files = idx_files()
    remotes = tuple(Remote(f, len(b), hashlib.sha256(b).hexdigest()) for f, b in files.items())
    monkeypatch.setitem(fetch.SOURCES, "fashion-mnist", Source("x", remotes, "fashion-mnist"))
    content = {f[:-3]: hashlib.sha256(gzip.decompress(b)).hexdigest() for f, b in files.items()}
    monkeypatch.setitem(fetch.CONTENT_SHA256, "fashion-mnist", content)
    for f, b in files.items():  # re-compressed, as Debian ships them, or unpacked
        (tmp_path / (f if "labels" in f else f[:-3])).write_bytes(
            gzip.compress(gzip.decompress(b), mtime=7) if "labels" in f else gzip.decompress(b))
    found = lookup.locate("fashion-mnist", tmp_path)
    assert survey.checksum(found) == "ok (decompressed content)"
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\0" * 20)
    assert survey.checksum(found) == "no match: t10k-images-idx3-ubyte"


def test_keras_npz_checksum(tmp_path, monkeypatch):
    p = tmp_path / "mnist.npz"
    np.savez(p, x_train=np.zeros((20, 2)), y_train=np.arange(20) % 2, x_test=np.zeros((4, 2)),
             y_test=np.arange(4) % 2)
    found = lookup.locate("mnist", tmp_path)
    assert survey.checksum(found) == "no match: mnist.npz"
    monkeypatch.setitem(fetch.KERAS_NPZ_SHA256, "mnist.npz", fetch.sha256(p))
    assert survey.checksum(found) == "ok"


def test_published_checksum_table_is_complete():
    for name, src in fetch.SOURCES.items():
        assert name in lookup.LAYOUT_DIRS and src.base.startswith("https://")
        for r in src.files:
            assert len(r.sha256) == 64 and int(r.sha256, 16) >= 0 and r.size > 0
    assert {f"{n}.gz" for n in IDX_NAMES} == {r.file for r in fetch.MNIST.files}
    assert set(fetch.CONTENT_SHA256["fashion-mnist"]) == set(IDX_NAMES)


# --- the CLI: milr data list / fetch ----------------------------------------------------------

runner = CliRunner()


def cli():
    app = typer.Typer()
    app.add_typer(data_app, name="data")
    return app


def test_cli_list_shows_every_data_set(server, tmp_path):
    server.serve("mnist", idx_files())
    fetch.fetch("mnist", tmp_path)
    res = runner.invoke(cli(), ["data", "list", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("gaussians", "fashion-mnist", "mnist", "cifar10", "milr data fetch cifar10"):
        assert name in res.output
    entries = {e.name: e for e in survey.survey(tmp_path)}
    assert entries["mnist"].found and entries["mnist"].checksum == "ok"
    assert entries["mnist"].shapes == "60 + 20 × 784, 10 classes"
    assert not entries["cifar10"].found and "milr data fetch cifar10" in entries["cifar10"].problem


def test_cli_list_reports_an_unreadable_set(tmp_path, monkeypatch):
    monkeypatch.setattr(lookup, "default_roots", lambda: [])
    monkeypatch.setattr(lookup, "SYSTEM_DIRS", {})
    (tmp_path / "mnist.npz").write_bytes(b"")
    entry = {e.name: e for e in survey.survey(tmp_path)}["mnist"]
    assert entry.found and "is empty (0 bytes)" in entry.problem
    res = runner.invoke(cli(), ["data", "list", "--data-dir", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_cli_fetch_success_and_one_line_errors(server, tmp_path):
    server.serve("mnist", idx_files())
    res = runner.invoke(cli(), ["data", "fetch", "mnist", "--to", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"mnist is in {tmp_path / 'mnist'}" in res.output.replace("\n", "")
    (tmp_path / "file").write_text("")
    bad = runner.invoke(cli(), ["data", "fetch", "mnist", "--to", str(tmp_path / "file")])
    assert bad.exit_code == 2 and "milr: error: cannot write to" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and "Traceback" not in bad.output
