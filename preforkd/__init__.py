"""preforkd: a prefork HTTP/1.1 and HTTP/2 server for WSGI applications."""

__version__ = "0.1.0"
