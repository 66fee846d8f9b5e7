"""Where the model manager's bytes come from: a small :class:`Fetcher` protocol and its two real sources.

A fetcher lists a model's files (path, size, hashes when the source publishes them) and fetches one
file into a partial file, resuming from a byte offset (HTTP ``Range``). :class:`HubFetcher` uses
huggingface_hub for what the hub knows (the endpoint, ``HF_ENDPOINT``; the token, ``HF_TOKEN`` or
``hf auth login``; the file list with LFS sha256 and git blob ids, pinned to one commit) and streams each
file with urllib, which honours ``HTTPS_PROXY``/``NO_PROXY``; :class:`URLFetcher` fetches a one-file model
from a plain URL (rembg's IS-Net). Tests pass their own fetcher (a fake hub) or point these at a local
server. Nothing here writes anywhere but the partial file it is given.
"""

from __future__ import annotations

import fnmatch
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol
from urllib.parse import urlparse

from orbitmesh.errors import ModelError

if TYPE_CHECKING:
    from orbitmesh.models.catalogue import ModelEntry

CHUNK = 1 << 20  # bytes per read: also how often progress is reported and cancellation checked
TIMEOUT_S = 30.0  # per socket operation (connect, each read)
# Every file of a diffusers repo that a pipeline loads, when the catalogue names no patterns: the
# components' subfolders and model_index.json (not the repo's single-file checkpoints next to them).
DIFFUSERS_ALL = ("model_index.json", "*/*")

Report = Callable[[int, "int | None"], None]  # (partial file size, whole size if known) per chunk; may raise


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model as its source lists it. ``path``: relative path inside the model (and the repo);
    ``size`` in bytes when known; the hashes the source publishes (hub: ``sha256`` of LFS files, ``git_sha1``
    (the git blob id) of the others; a URL model: the catalogue's ``md5``)."""

    path: str
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    md5: str | None = None
    url: str | None = None  # where to GET it (URL fetcher); the hub fetcher builds its own


@dataclass(frozen=True)
class Listing:
    """What a fetcher found: the files and the revision they belong to (a hub commit; None for a URL)."""

    files: tuple[RemoteFile, ...]
    revision: str | None = None


class Fetcher(Protocol):
    """The transfer behind the model manager (see the module docstring)."""

    where: str  # named in errors: "the Hugging Face hub (https://huggingface.co)"

    def list_files(self, entry: ModelEntry) -> Listing:
        """The files to download for ``entry``; ModelError (network, access) with the fix."""

    def fetch(self, entry: ModelEntry, listing: Listing, file: RemoteFile, dest: Path, report: Report) -> None:
        """Append ``file`` to ``dest`` from ``dest``'s current size (creating it), calling ``report(size, total)``
        after each chunk; restart from 0 when the server ignores the range. Returns when the source has sent
        everything (the caller verifies size and hashes); a cut transfer raises (ModelError or OSError), the
        partial file kept."""


# ----- errors -------------------------------------------------------------------------------------------

_TRANSPORT_NAMES = {"ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "NetworkError",
                    "TransportError", "ProxyError", "ReadTimeout", "OfflineModeIsEnabled", "RemoteProtocolError"}


def is_network_error(exc: BaseException) -> bool:
    """A failure to reach the server (refused, DNS, proxy, timeout, offline mode), from urllib, requests or httpx."""
    if isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, urllib.error.HTTPError) and exc.errno is None:
        return True  # e.g. requests' ConnectionError (an IOError without an errno)
    return any(cls.__name__ in _TRANSPORT_NAMES for cls in type(exc).__mro__)


def network_error(where: str, exc: BaseException, *, hub: bool) -> ModelError:
    """The ModelError for a server that cannot be reached (or dropped the transfer), with the fix."""
    if isinstance(exc, TransferCut):
        return ModelError(f"the download from {where} stopped: {exc}",
                          fix="run the same download again: it resumes where it stopped")
    reason = getattr(exc, "reason", None) or exc
    if hub:
        fix = ("check the network and proxy (HTTPS_PROXY); behind a mirror set HF_ENDPOINT to it; or download on a "
               "machine with internet and copy it here with `orbitmesh models install NAME PATH`")
    else:
        fix = ("check the network and proxy (HTTPS_PROXY); or download the file on a machine with internet and copy "
               "it here with `orbitmesh models install NAME PATH`")
    return ModelError(f"cannot reach {where}: {reason}", fix=fix)


# ----- HTTP with Range ----------------------------------------------------------------------------------

class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the hub sends files to its CDN) but never carry the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlparse(newurl).netloc != urlparse(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _opener() -> urllib.request.OpenerDirector:
    # ProxyHandler() reads http(s)_proxy / no_proxy from the environment, as requests and httpx do.
    return urllib.request.build_opener(urllib.request.ProxyHandler(), _SameHostAuthRedirect())


class TransferCut(ConnectionError):
    """The server closed the connection before sending the whole file (the partial file is kept)."""


def _total_of(response, offset: int) -> int | None:
    """The whole file's size from a response: Content-Range's total (206), else offset + Content-Length."""
    content_range = response.headers.get("Content-Range") or ""
    if response.status == 206 and "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def http_range_get(url: str, dest: Path, report: Report, *, headers: dict[str, str] | None = None,
                   timeout: float = TIMEOUT_S) -> None:
    """GET ``url`` into ``dest``, resuming from its current size with ``Range: bytes=N-``.

    206: appended. 200 while resuming (the server ignored the range): ``dest`` is truncated and the whole
    file written. 416 while resuming: the partial file already holds everything (the caller verifies).
    ``report(size, total)`` after each chunk (total: the whole file's size when the server says it).
    HTTP errors are raised as ``urllib.error.HTTPError``; connection failures as ``URLError``/``OSError``;
    a body shorter than announced as :class:`TransferCut`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = dest.stat().st_size if dest.exists() else 0
    request = urllib.request.Request(url, headers={**(headers or {}), "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            report(offset, offset)
            return
        raise
    with response, open(dest, "r+b" if offset else "wb") as out:
        if offset and response.status == 206:
            out.seek(offset)
        else:  # a fresh download, or the range was ignored: start over
            out.truncate(0)
            offset = 0
        total = _total_of(response, offset)
        report(offset, total)
        while True:
            try:
                chunk = response.read(CHUNK)
            except http.client.HTTPException as exc:  # IncompleteRead of a chunked body
                raise TransferCut(f"the transfer was cut after {offset} bytes ({type(exc).__name__})") from exc
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)
            report(offset, total)
    if total is not None and offset < total:
        raise TransferCut(f"the transfer was cut after {offset} of {total} bytes")


# ----- a plain URL (rembg) --------------------------------------------------------------------------------

class URLFetcher:
    """A one-file model at a plain URL (``entry.source.url``), checked against the catalogue's md5."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url  # None: the entry's own URL (tests point it at a local server)
        self.where = "the download server"

    def _url(self, entry: ModelEntry) -> str:
        url = self.url or entry.source.url
        if not url:
            raise ModelError(f"{entry.name} has no download URL", fix="this is a bug in the model catalogue")
        return url

    def list_files(self, entry: ModelEntry) -> Listing:
        url = self._url(entry)
        self.where = f"the download server ({urlparse(url).scheme}://{urlparse(url).netloc})"
        return Listing((RemoteFile(entry.files[0], md5=entry.source.md5, url=url),))

    def fetch(self, entry: ModelEntry, listing: Listing, file: RemoteFile, dest: Path, report: Report) -> None:
        url = file.url or self._url(entry)
        try:
            http_range_get(url, dest, report)
        except urllib.error.HTTPError as exc:
            raise ModelError(f"{url} answered HTTP {exc.code} {exc.reason}",
                             fix="try again later; or download the file by hand and run "
                                 f"`orbitmesh models install {entry.name} PATH`") from exc
        except OSError as exc:
            if is_network_error(exc):
                raise network_error(self.where, exc, hub=False) from exc
            raise


# ----- the Hugging Face hub -------------------------------------------------------------------------------

def hub_endpoint() -> str:
    """The hub to talk to: ``HF_ENDPOINT`` when set (read now, so a changed environment counts), else
    huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _lfs_sha256(lfs) -> str | None:
    if lfs is None:
        return None
    return getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)


def _wanted(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def _has_token() -> bool:
    try:
        from huggingface_hub import get_token

        return bool(get_token())
    except Exception:  # noqa: BLE001 - an old huggingface_hub, an unreadable token file: say "no token"
        return bool(os.environ.get("HF_TOKEN"))


def gated_error(entry: ModelEntry, detail: str) -> ModelError:
    token = "a token was sent" if _has_token() else "no token is set"
    return ModelError(
        f"{entry.name}: the hub refused access to {entry.hub_id} ({detail}; {token})",
        fix=f"{entry.hub_id} is gated: open https://huggingface.co/{entry.hub_id}, log in and accept its licence "
            f"({entry.licence}), then create a read token at https://huggingface.co/settings/tokens and run "
            "`hf auth login` or set HF_TOKEN for the process that downloads (the server, too)")


class HubFetcher:
    """A hub repo (``entry.hub_id``): the catalogue's files or patterns, pinned to the commit listed."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None) -> None:
        self.endpoint = endpoint  # None: hub_endpoint() at each call
        self.token = token  # None: HF_TOKEN or the saved login (huggingface_hub's rule)

    @property
    def where(self) -> str:
        return f"the Hugging Face hub ({self.endpoint or hub_endpoint()})"

    def _hub_errors(self, entry: ModelEntry, exc: Exception) -> Exception:
        """The ModelError for an exception of the hub client; ``exc`` itself when it is none of ours."""
        try:
            from huggingface_hub import errors
        except ImportError:  # huggingface_hub < 0.24 keeps them in utils
            from huggingface_hub import utils as errors

        if isinstance(exc, errors.GatedRepoError):
            return gated_error(entry, "gated repository")
        if isinstance(exc, errors.RepositoryNotFoundError):
            if entry.gated:  # the hub answers 401 "not found" to an anonymous request for a gated repo
                return gated_error(entry, "repository not found without access")
            return ModelError(f"{entry.hub_id} was not found on {self.where}",
                              fix="check HF_ENDPOINT (a mirror may not carry it) and the hub id")
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return gated_error(entry, f"HTTP {status}")
        if isinstance(exc, errors.HfHubHTTPError):
            return ModelError(f"{self.where} answered an error for {entry.hub_id}: {exc}",
                              fix="try again later; or download on another machine and use `orbitmesh models install`")
        if is_network_error(exc):
            return network_error(self.where, exc, hub=True)
        return exc

    def list_files(self, entry: ModelEntry) -> Listing:
        from huggingface_hub import HfApi, constants

        from orbitmesh.models.catalogue import DIFFUSERS_INDEX

        if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ModelError(f"cannot download {entry.name}: HF_HUB_OFFLINE is set (offline mode)",
                             fix="unset HF_HUB_OFFLINE on a machine with internet, or copy the model here with "
                                 "`orbitmesh models install NAME PATH`")
        endpoint = self.endpoint or hub_endpoint()
        try:
            info = HfApi(endpoint=endpoint, token=self.token).model_info(entry.hub_id, files_metadata=True)
        except Exception as exc:  # noqa: BLE001 - mapped to a ModelError with its fix, or re-raised
            raise self._hub_errors(entry, exc) from exc
        patterns = entry.files
        if entry.source.local_marker == (DIFFUSERS_INDEX,) and not patterns:
            patterns = DIFFUSERS_ALL
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        if entry.kind == "text_to_image":
            names = sorted(name for name in siblings if _wanted(name, patterns))
        else:
            missing = [name for name in patterns if name not in siblings]
            if missing:
                raise ModelError(f"{entry.hub_id} on {self.where} has no {', '.join(missing)}",
                                 fix="the repository changed; update orbitmesh, or install the files by hand "
                                     "with `orbitmesh models install`")
            names = list(patterns)
        if not names:
            raise ModelError(f"{entry.hub_id} on {self.where} has no files matching {', '.join(patterns)}",
                             fix="update orbitmesh, or install the model by hand with `orbitmesh models install`")
        files = []
        for name in names:
            sibling = siblings[name]
            lfs = getattr(sibling, "lfs", None)
            files.append(RemoteFile(name, size=getattr(sibling, "size", None), sha256=_lfs_sha256(lfs),
                                    git_sha1=None if lfs else getattr(sibling, "blob_id", None)))
        return Listing(tuple(files), revision=getattr(info, "sha", None))

    def fetch(self, entry: ModelEntry, listing: Listing, file: RemoteFile, dest: Path, report: Report) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(entry.hub_id, file.path, revision=listing.revision or "main",
                         endpoint=self.endpoint or hub_endpoint())
        headers = build_hf_headers(token=self.token)
        try:
            http_range_get(url, dest, report, headers=headers)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) or (exc.code == 404 and entry.gated):
                raise gated_error(entry, f"HTTP {exc.code} for {file.path}") from exc
            raise ModelError(f"{self.where} answered HTTP {exc.code} {exc.reason} for {entry.hub_id}/{file.path}",
                             fix="try again later (the partial download is kept and resumes)") from exc
        except OSError as exc:
            if is_network_error(exc):
                raise network_error(self.where, exc, hub=True) from exc
            raise


def fetcher_for(entry: ModelEntry) -> Fetcher:
    """The real fetcher of a catalogue entry: a plain URL, else the hub."""
    if entry.source.url:
        return URLFetcher()
    if entry.hub_id:
        return HubFetcher()
    raise ModelError(f"{entry.name} is not downloaded: it is part of orbitmesh", fix="nothing to do")
