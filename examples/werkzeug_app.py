"""A Werkzeug application showing routing, streaming, file download and upload.

preforkd --workers 2 examples.werkzeug_app:app

curl http://127.0.0.1:8000/hello/you
curl http://127.0.0.1:8000/stream
curl -O http://127.0.0.1:8000/download
curl --data-binary @somefile http://127.0.0.1:8000/upload
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

HERE = os.path.dirname(os.path.abspath(__file__))

url_map = Map(
    [
        Rule("/", endpoint="index"),
        Rule("/hello/<name>", endpoint="hello"),
        Rule("/stream", endpoint="stream"),
        Rule("/download", endpoint="download"),
        Rule("/upload", endpoint="upload", methods=["POST", "PUT"]),
    ]
)


def index(request: Request) -> Response:
    return Response("preforkd werkzeug example: /hello/<name>, /stream, /download, /upload\n")


def hello(request: Request, name: str) -> Response:
    return Response(f"Hello, {name}!\n")


def stream(request: Request) -> Response:
    """A streaming response: sent chunk by chunk (chunked transfer coding)."""
    count = int(request.args.get("count", 5))
    delay = float(request.args.get("delay", 0.1))

    def generate() -> Iterator[str]:
        for i in range(count):
            yield f"chunk {i}\n"
            time.sleep(delay)

    return Response(generate(), mimetype="text/plain")


def download(request: Request) -> Response:
    """A file sent through wsgi.file_wrapper (sendfile on plain HTTP/1.1)."""
    path = os.path.join(HERE, "hello.py")
    fh = open(path, "rb")  # noqa: SIM115 - the server closes it through the wrapper
    response = Response(wrap_file(request.environ, fh), mimetype="text/x-python")
    response.headers["Content-Length"] = str(os.path.getsize(path))
    response.headers["Content-Disposition"] = "attachment; filename=hello.py"
    response.direct_passthrough = True
    return response


def upload(request: Request) -> Response:
    """Reads the request body as a stream and answers its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := request.stream.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return Response(f"{size} {digest.hexdigest()}\n", mimetype="text/plain")


VIEWS = {"index": index, "hello": hello, "stream": stream, "download": download, "upload": upload}


@Request.application
def app(request: Request) -> Response:
    adapter = url_map.bind_to_environ(request.environ)
    try:
        endpoint, values = adapter.match()
        return VIEWS[endpoint](request, **values)
    except HTTPException as exc:
        return exc  # type: ignore[return-value]
