"""Verified downloads of the named data sets (`milr data fetch`); what is on disk (`milr data list`)
is milr.data.survey's business.

Only the standard library speaks HTTP. A file is downloaded to `<name>.part` beside its final
place, checked against the SHA-256 that milr ships, and only then renamed into place: an
interrupted fetch leaves no half-written data file, a rerun resumes the `.part` (HTTP Range) or
restarts it, and a file whose checksum does not match is deleted, never kept.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..base.files import fsync_dir
from .formats import CIFAR_TEST, CIFAR_TRAIN, DataError
from .lookup import milr_home


@dataclass(frozen=True)
class Remote:
    """One published file: its name on the server, its size in bytes and its SHA-256."""

    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Source:
    """Where a data set's official files are published and where they go under a root."""

    base: str
    files: tuple[Remote, ...]
    subdir: str


# MNIST: the copy that TensorFlow Datasets downloads (the original yann.lecun.com files, which
# that site no longer serves reliably). Sizes and SHA-256 from tensorflow/datasets,
# tensorflow_datasets/url_checksums/mnist.txt.
MNIST = Source("https://storage.googleapis.com/cvdf-datasets/mnist/", (
    Remote("train-images-idx3-ubyte.gz", 9912422,
           "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    Remote("train-labels-idx1-ubyte.gz", 28881,
           "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    Remote("t10k-images-idx3-ubyte.gz", 1648877,
           "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    Remote("t10k-labels-idx1-ubyte.gz", 4542,
           "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
), "mnist")
# Fashion-MNIST: Zalando's files, served over HTTPS from Keras's bucket. SHA-256 from
# keras-team/keras, keras/src/datasets/fashion_mnist.py (FILE_HASHES), identical to those of
# tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt for Zalando's own
# server; sizes from the latter. The MD5s in zalandoresearch/fashion-mnist's README match too.
FASHION_MNIST = Source("https://storage.googleapis.com/tensorflow/tf-keras-datasets/", (
    Remote("train-images-idx3-ubyte.gz", 26421880,
           "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    Remote("train-labels-idx1-ubyte.gz", 29515,
           "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    Remote("t10k-images-idx3-ubyte.gz", 4422102,
           "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    Remote("t10k-labels-idx1-ubyte.gz", 5148,
           "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
), "fashion-mnist")
# CIFAR-10, binary version (no pickles): size and SHA-256 from tensorflow/datasets,
# tensorflow_datasets/url_checksums/cifar10.txt.
CIFAR10 = Source("https://www.cs.toronto.edu/~kriz/", (
    Remote("cifar-10-binary.tar.gz", 170052171,
           "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
), "")
SOURCES = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST, "cifar10": CIFAR10}

# SHA-256 of the decompressed IDX files, for copies that were re-compressed or unpacked. Only
# Fashion-MNIST's are known: computed here from Debian's dataset-fashion-mnist, whose .gz files
# differ from the published ones only in the gzip header (file name and time dropped); putting
# the header back reproduces the published SHA-256 above and Zalando's MD5 for all four files.
CONTENT_SHA256 = {"fashion-mnist": {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}}
# Keras's mnist.npz: SHA-256 from keras-team/keras, keras/src/datasets/mnist.py (file_hash).
KERAS_NPZ_SHA256 = {"mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}

CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_EXTRA = ("batches.meta.txt", "readme.html")  # also in the archive, harmless text
MANIFEST = "milr-sha256.txt"  # SHA-256 of the batches extracted from the verified archive

RETRIES = 4  # attempts per file for transient network errors
BACKOFF = 1.0  # seconds before the 2nd attempt, doubled for each later one
TIMEOUT = 30.0  # seconds without data before a connection counts as dropped
# A server that trickles (a byte every few seconds, never TIMEOUT without data) is given up on
# once a file has taken GRACE seconds plus its size at MIN_RATE bytes/s (CIFAR-10: about 5 h).
GRACE = 60.0
MIN_RATE = 10_000
CHUNK = 1 << 16

Progress = Callable[[str, int, int], None]  # (file, bytes so far, bytes in all)


class FetchError(DataError):
    """A download that failed or did not verify; nothing corrupt was left in place."""


@dataclass
class FetchResult:
    """What `fetch` did: where the data set now lies, which files came down, which were there."""

    name: str
    where: Path
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def default_target() -> Path:
    """`$MILR_DATA` if set, else milr's own data directory (both are searched by `load`)."""
    env = os.environ.get("MILR_DATA")
    return Path(env).expanduser() if env else milr_home()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, to: str | os.PathLike | None = None, mirror: str | None = None,
          progress: Progress | None = None) -> FetchResult:
    """Download, verify and put in place the official files of `name` under `to`."""
    if name not in SOURCES:
        needs = " (gaussians is generated and needs no download)" if name == "gaussians" else ""
        raise FetchError(f"cannot fetch {name!r}: milr downloads {', '.join(SOURCES)}{needs}")
    if mirror is not None and not mirror.startswith(("http://", "https://", "file://")):
        raise FetchError(f"mirror must be an http://, https:// or file:// URL, got {mirror!r}")
    src = SOURCES[name]
    root = Path(to).expanduser() if to else default_target()
    dest = root / src.subdir if src.subdir else root
    if name == "cifar10" and _manifest_ok(root / CIFAR_DIR):
        return FetchResult(name, root / CIFAR_DIR, present=[CIFAR_DIR])
    _prepare(dest)
    base = (mirror.rstrip("/") + "/") if mirror else src.base
    result = FetchResult(name, dest)
    for r in src.files:
        path = dest / r.file
        if path.is_file() and path.stat().st_size == r.size and sha256(path) == r.sha256:
            result.present.append(r.file)
            continue
        download(base + r.file, path, r, progress, mirror=mirror is not None)
        result.downloaded.append(r.file)
    if name == "cifar10":
        result.where = extract_cifar(dest / CIFAR10.files[0].file, root)
    return result


def _prepare(dest: Path) -> None:
    """Fail before any download if `dest` cannot be created or written."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dest):
            pass
    except OSError as e:
        raise FetchError(f"cannot write to {dest}: {e.strerror or e}") from None


# --- one file ---------------------------------------------------------------------------------

# Network failures worth another attempt (the .part file is resumed). URLError and the socket
# errors are OSErrors; errors of our own disk are turned into FetchError before they get here.
_TRANSIENT = (OSError, http.client.HTTPException)


def download(url: str, path: Path, remote: Remote, progress: Progress | None = None,
             mirror: bool = False) -> None:
    """Fetch `url` into `path` through `path.part`, with retries; verify, then rename.

    `mirror`: `url` is the user's mirror (a failure then does not suggest --mirror)."""
    part = path.with_name(path.name + ".part")
    last: Exception | None = None
    deadline = time.monotonic() + GRACE + remote.size / MIN_RATE
    for attempt in range(1, RETRIES + 1):
        try:
            _transfer(url, part, remote, progress, deadline)
            break
        except urllib.error.HTTPError as e:
            if e.code == 416:  # our .part does not fit the server's file: start it again
                part.unlink(missing_ok=True)
            elif 300 <= e.code < 400:  # urllib follows redirects; one it returns is a loop
                raise FetchError(f"cannot download {url}: HTTP {e.code}: the server redirects "
                                 "in a loop") from None
            elif e.code < 500 and e.code not in (408, 429):
                raise FetchError(f"cannot download {url}: HTTP {e.code} "
                                 f"{_one_line(e.reason)}") from None
            last = e
        except _TRANSIENT as e:
            last = e
        if attempt < RETRIES:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
    else:
        hint = "the mirror down?" if mirror else "use --mirror URL,"
        raise FetchError(f"cannot download {url} after {RETRIES} attempts: {_reason(last)} "
                         f"(offline? {hint} or copy {remote.file} into {path.parent})") from None
    got = sha256(part)
    if got != remote.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"checksum mismatch for {url}: SHA-256 {got}, expected {remote.sha256}; "
                         "the download was deleted")
    os.replace(part, path)
    fsync_dir(path.parent)


def _reason(e: Exception) -> str:
    """The innermost reason of a network error, in a few words (one line)."""
    reason = getattr(e, "reason", None) or e
    return _one_line(f"{type(reason).__name__}: {reason}" if not isinstance(reason, str)
                     else reason)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _declared_size(resp, have: int) -> int | None:
    """The whole file's size as the server states it (Content-Range, else Content-Length)."""
    rng = resp.headers.get("Content-Range") or ""
    if "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit():
        return int(length) + have
    return None


def _transfer(url: str, part: Path, remote: Remote, progress: Progress | None,
              deadline: float = math.inf) -> None:
    """Append the rest of `url` to `part` (Range request), or restart it if refused."""
    have = part.stat().st_size if part.exists() else 0
    if have == remote.size and sha256(part) == remote.sha256:
        return  # a finished download that was not renamed yet
    if have >= remote.size:  # too long, or a stale .part of full size: not a download to resume
        part.unlink()
        have = 0
    headers = {"User-Agent": "milr (data fetch)"} | ({"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=TIMEOUT) as resp:
        if have and getattr(resp, "status", 200) != 206:
            have = 0  # the server ignored the range: start again
        size = _declared_size(resp, have)
        if size is not None and size != remote.size:  # complete, but not the published file
            part.unlink(missing_ok=True)
            raise FetchError(f"{url} has the wrong size: {size} bytes, but the published "
                             f"{remote.file} has {remote.size}; not the file milr expects, "
                             "nothing was kept")
        done = have
        read = getattr(resp, "read1", resp.read)  # whatever has arrived: a trickle is seen
        with _local(part, "ab" if have else "wb") as f:
            while chunk := read(CHUNK):
                if time.monotonic() > deadline:
                    raise FetchError(f"gave up on {url}: {done} of {remote.size} bytes after "
                                     f"{GRACE + remote.size / MIN_RATE:.0f} s (slower than "
                                     f"{MIN_RATE} bytes/s); rerun to resume {part.name}")
                done += len(chunk)
                if done > remote.size:
                    raise _write_error(part, f"{url} sent more than the published "
                                             f"{remote.size} bytes")
                _write(f, chunk, part)
                if progress:
                    progress(remote.file, done, remote.size)
    if done < remote.size:
        raise http.client.IncompleteRead(b"", remote.size - done)


class _local:
    """Open a local file, turning its OSErrors (disk full, permissions) into FetchError."""

    def __init__(self, path: Path, mode: str):
        self.path, self.mode = path, mode

    def __enter__(self):
        try:
            self.f = open(self.path, self.mode)
        except OSError as e:
            raise _write_error(self.path, e.strerror or str(e)) from None
        return self.f

    def __exit__(self, *exc) -> None:
        try:
            self.f.close()
        except OSError as e:
            raise _write_error(self.path, e.strerror or str(e)) from None


def _write(f, chunk: bytes, path: Path) -> None:
    try:
        f.write(chunk)
    except OSError as e:
        raise _write_error(path, e.strerror or str(e)) from None


def _write_error(path: Path, why: str) -> FetchError:
    return FetchError(f"cannot write {path}: {why}")


# --- CIFAR-10's archive -----------------------------------------------------------------------


def extract_cifar(archive: Path, root: Path) -> Path:
    """Extract the batches of the verified archive into root/cifar-10-batches-bin, safely.

    Only regular files named as in the official archive are written, each to a fixed name of
    ours (no path from the archive is ever used, so no traversal); the archive is deleted after.
    """
    out = root / CIFAR_DIR
    wanted = {*CIFAR_TRAIN, CIFAR_TEST, *CIFAR_EXTRA}
    digests = {}
    try:
        out.mkdir(exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                if m.isfile() and parts[:1] == (CIFAR_DIR,) and len(parts) == 2 \
                        and parts[1] in wanted:
                    digests[parts[1]] = _extract_one(tar, m, out / parts[1])
    except (tarfile.TarError, zlib.error, EOFError) as e:
        raise FetchError(f"cannot extract {archive}: {type(e).__name__}: {e}") from None
    except OSError as e:
        raise FetchError(f"cannot extract {archive} into {out}: {e.strerror or e}") from None
    missing = sorted({*CIFAR_TRAIN, CIFAR_TEST} - set(digests))
    if missing:
        raise FetchError(f"{archive} lacks {', '.join(missing)}: not CIFAR-10's binary version")
    _write_manifest(out, archive, digests)
    archive.unlink()
    return out


def _extract_one(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> str:
    """Copy one member to `dest` through a temporary file; return its SHA-256."""
    h = hashlib.sha256()
    src = tar.extractfile(member)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return h.hexdigest()


def _write_manifest(out: Path, archive: Path, digests: dict[str, str]) -> None:
    lines = [f"# extracted by milr from {archive.name} "
             f"(SHA-256 {CIFAR10.files[0].sha256}, verified)"]
    lines += [f"{d}  {name}" for name, d in sorted(digests.items())]
    tmp = out / (MANIFEST + ".part")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / MANIFEST)


def read_manifest(out: Path) -> dict[str, str]:
    """The SHA-256 per file recorded when the archive was extracted ({} if none)."""
    try:
        text = (out / MANIFEST).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    digests = {}
    for line in text.splitlines():
        if "  " in line and not line.startswith("#"):
            digest, name = line.split("  ", 1)
            digests[name] = digest
    return digests


def _manifest_ok(out: Path) -> bool:
    """Whether every batch extracted earlier is there, unchanged."""
    m = read_manifest(out)
    names = [*CIFAR_TRAIN, CIFAR_TEST]
    return all(n in m and (out / n).is_file() and sha256(out / n) == m[n] for n in names)
