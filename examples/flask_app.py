"""A Flask application (needs `pip install flask`).

preforkd --workers 2 examples.flask_app:app
preforkd 'examples.flask_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request, stream_with_context


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "Hello from Flask on preforkd!\n"

    @app.get("/json")
    def as_json() -> Response:
        return jsonify(path=request.path, args=request.args, scheme=request.scheme)

    @app.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")

    @app.get("/stream")
    def stream() -> Response:
        def generate():  # type: ignore[no-untyped-def]
            for i in range(3):
                yield f"line {i}\n"

        return Response(stream_with_context(generate()), mimetype="text/plain")

    return app


app = create_app()
