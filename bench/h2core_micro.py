"""CPU per request of the HTTP/2 core alone, in process: no sockets, no threads, no app.

    python bench/h2core_micro.py                      # this checkout's core
    python bench/h2core_micro.py --compare OLD_TREE   # and another checkout's, interleaved

A client built with h2 generates, once, the bytes of 16 connections x 32 concurrent
streams of ``GET /`` (each connection runs ``--batches`` rounds of 32 requests, as h2load
does), recording what the client sends. Each timed run feeds those bytes to fresh server
cores, answers every request ("200 OK", 13 bytes, END_STREAM) and collects the bytes to
send: the core's whole share of a request, as the worker's loop spends it. The result is
the median over ``--runs`` runs, in microseconds per request.

With ``--compare``, each run alternates this checkout and OLD_TREE (a directory holding an
older ``preforkd`` package) in child processes, so both see the same machine load: the
figure to quote is the ratio, not the absolute time (the machine is shared).
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import h2.events
import interleaved

CONNS, STREAMS = 16, 32
BODY = b"Hello, world!"
HEADERS = [("content-type", "text/plain"), ("content-length", str(len(BODY)))]


def record_traffic(batches: int) -> list[list[bytes]]:
    """Per connection, the client's writes: preface + SETTINGS, then one write per batch."""
    from preforkd.proto.events import Request
    from preforkd.proto.h2 import H2Connection

    traffic = []
    for _ in range(CONNS):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = H2Connection()
        server.initiate()
        client.initiate_connection()
        writes = []
        for _ in range(batches):
            for _ in range(STREAMS):
                sid = client.get_next_available_stream_id()
                request = [(":method", "GET"), (":scheme", "http"), (":path", "/")]
                client.send_headers(sid, [*request, (":authority", "bench")], end_stream=True)
            data = client.data_to_send()
            writes.append(data)
            for event in server.receive_data(data, 0.0):
                if isinstance(event, Request):
                    server.send_response(event.stream_id, "200 OK", HEADERS)
                    server.send_data(event.stream_id, BODY, end_stream=True)
            for event in client.receive_data(server.data_to_send()):
                if isinstance(event, h2.events.StreamEnded):
                    pass
        traffic.append(writes)
    return traffic


def serve(traffic: list[list[bytes]]) -> tuple[float, int]:
    """Seconds of CPU to serve ``traffic``, and the number of requests answered."""
    from preforkd.proto.events import Request
    from preforkd.proto.h2 import H2Connection

    answered = 0
    start = time.process_time()
    for writes in traffic:
        server = H2Connection()
        server.date_header = b"Mon, 01 Jan 2024 00:00:00 GMT"
        server.initiate()
        server.data_to_send()
        for data in writes:
            for event in server.receive_data(data, 0.0):
                if type(event) is Request:
                    server.send_response(event.stream_id, "200 OK", HEADERS)
                    server.send_data(event.stream_id, BODY, end_stream=True)
                    answered += 1
            server.data_to_send()
    return time.process_time() - start, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    interleaved.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        interleaved.child(args.child, serve)
        return
    traffic = record_traffic(args.batches)
    requests = CONNS * STREAMS * args.batches
    results = interleaved.run(__file__, traffic, args.runs, args.compare)
    print(f"{requests} requests per run ({CONNS} conns x {STREAMS} streams x {args.batches})")
    interleaved.report(results, "us/request")


if __name__ == "__main__":
    main()
