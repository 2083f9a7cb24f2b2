"""One JSON call to the mirrorhost admin API, with the standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import MirrorManagerError, TransportError

Json = Dict[str, Any]

# Longest a call waits for an answer; `sync?wait=true` answers within the
# server's own limit (600 s), so this stays above it.
DEFAULT_TIMEOUT = 660.0


class Api:
    """The admin API at ``url`` with bearer ``token``.

    The token is kept out of ``repr`` and out of every exception text.
    """

    def __init__(self, url: str, token: Optional[str], timeout: float = DEFAULT_TIMEOUT):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("url: must be an http:// or https:// address of mirrorhost")
        if parsed.username or parsed.password:
            raise ValueError("url: must not carry credentials; pass token= instead")
        self.url = url.rstrip("/")
        self.__token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Api(url={self.url!r})"

    def call(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        query: Optional[Mapping[str, Any]] = None,
        secrets: Iterable[str] = (),
    ) -> Tuple[Any, Mapping[str, str]]:
        """Sends one request with a JSON body (if any); the decoded JSON answer
        (None for 204) and the response headers. ``secrets`` are the secret
        strings this call sends: should the server ever quote one back, the
        exception shows ``***``."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        raw, headers = self._send(method, path, data, "application/json", query, secrets)
        return _decode(raw), headers

    def object(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        query: Optional[Mapping[str, Any]] = None,
        secrets: Iterable[str] = (),
    ) -> Json:
        """Like :meth:`call`, for the calls that answer with a JSON object."""
        answer, _ = self.call(method, path, body, query, secrets)
        return _expect_object(answer, f"{method} {path}")

    def items(self, method: str, path: str, key: str, query: Optional[Mapping[str, Any]] = None) -> List[Json]:
        """The list under ``key`` of the object a call answers with."""
        return _expect_list(self.object(method, path, query=query).get(key), f"{method} {path}")

    def upload(self, path: str, data: bytes, content_type: str, query: Mapping[str, Any]) -> Json:
        """POSTs raw bytes; the JSON object answered."""
        raw, _ = self._send("POST", path, data, content_type, query, ())
        return _expect_object(_decode(raw), f"POST {path}")

    def text(self, path: str) -> str:
        """GETs a text document."""
        raw, _ = self._send("GET", path, None, "", None, ())
        return raw.decode("utf-8")

    def _send(
        self,
        method: str,
        path: str,
        data: Optional[bytes],
        content_type: str,
        query: Optional[Mapping[str, Any]],
        secrets: Iterable[str],
    ) -> Tuple[bytes, Mapping[str, str]]:
        address = self.url + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            address += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json"}
        if self.__token:
            headers["Authorization"] = "Bearer " + self.__token
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(address, data=data, method=method, headers=headers)
        hidden = [s for s in secrets if s] + ([self.__token] if self.__token else [])
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as error:
            raise _api_error(method, path, error, hidden) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            message = _hide(f"{method} {path}: cannot reach {self.url}: {reason}", hidden)
            raise TransportError(message) from None

    def pages(self, path: str, key: str, query: Optional[Mapping[str, Any]] = None) -> List[Json]:
        """Every item of a paged list, following ``X-Next-Page``."""
        items: List[Json] = []
        page: Optional[str] = "1"
        while page:
            answer, headers = self.call("GET", path, query={**(query or {}), "page": page, "per_page": 100})
            items.extend(_expect_list(_expect_object(answer, f"GET {path}").get(key), f"GET {path}"))
            page = _header(headers, "X-Next-Page")
        return items


def _expect_object(answer: Any, operation: str) -> Json:
    if not isinstance(answer, dict):
        raise MirrorManagerError(0, "bad_answer", "expected a JSON object", operation=operation)
    return answer


def _expect_list(answer: Any, operation: str) -> List[Json]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise MirrorManagerError(0, "bad_answer", "expected a list of JSON objects", operation=operation)
    return answer


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value or None
    return None


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    return json.loads(raw.decode("utf-8"))


def _hide(text: str, secrets: List[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _api_error(method: str, path: str, error: urllib.error.HTTPError, hidden: List[str]) -> MirrorManagerError:
    code, field, message = "http_error", None, error.reason or ""
    try:
        detail: Dict[str, Any] = json.loads(error.read().decode("utf-8"))["error"]
        code = str(detail.get("code", code))
        field = detail.get("field")
        message = str(detail.get("message", message))
    except (ValueError, KeyError, TypeError, OSError):
        pass
    return MirrorManagerError(
        status=error.code,
        code=code,
        field=field,
        message=_hide(str(message), hidden),
        operation=f"{method} {path}",
    )
