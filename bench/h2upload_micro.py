"""CPU per 1 MiB upload in the HTTP/2 core and wsgi.input, in process: no sockets, no threads.

    python bench/h2upload_micro.py                      # this checkout
    python bench/h2upload_micro.py --compare OLD_TREE   # and another checkout's, interleaved
    python bench/h2upload_micro.py --callgrind          # instructions (run under callgrind)

The h2c-post1m workload's loop-thread share, without the loop: 16 connections, each with 4
streams that POST 1 MiB in 16 KiB DATA frames, taking turns as h2load sends them. The
client's bytes are generated once (h2 encodes the heads; the DATA frames are written
directly) and cut into reads of 256 KiB, the most uvloop reads at once. Each timed run feeds
them to fresh server cores; each Data event goes into the stream's ``InputStream``, which
is drained in 64 KiB reads (as ``bench/apps.py``'s echo reads) after every network read, and
the consumption is acknowledged (the windows reopen, WINDOW_UPDATE frames are written) as
the adapter does. The result is the median over ``--runs`` runs, in microseconds per upload.

With ``--compare``, each run alternates this checkout and OLD_TREE in child processes, so both
see the same machine load: quote the ratio, not the absolute time (the machine is shared).
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import interleaved

CONNS, STREAMS = 16, 4
BODY_SIZE = 1 << 20
FRAME = 16384
READ_SIZE = 256 * 1024
APP_READ = 64 * 1024


def record_traffic() -> list[list[bytes]]:
    """Per connection, the client's bytes cut into network reads."""
    body = bytes(range(256)) * (FRAME // 256)
    traffic = []
    for _ in range(CONNS):
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        sids = []
        for _ in range(STREAMS):
            sid = client.get_next_available_stream_id()
            sids.append(sid)
            head = [(":method", "POST"), (":scheme", "http"), (":path", "/echo")]
            head += [(":authority", "bench"), ("content-length", str(BODY_SIZE))]
            client.send_headers(sid, head)
        wire = bytearray(client.data_to_send())
        for i in range(BODY_SIZE // FRAME):
            last = i == BODY_SIZE // FRAME - 1
            for sid in sids:
                flags = 1 if last else 0  # END_STREAM
                wire += FRAME.to_bytes(3) + bytes((0, flags)) + sid.to_bytes(4) + body
        traffic.append([bytes(wire[i : i + READ_SIZE]) for i in range(0, len(wire), READ_SIZE)])
    return traffic


def serve(traffic: list[list[bytes]]) -> tuple[float, int]:
    """Seconds of CPU to take in ``traffic``, and the number of uploads completed."""
    from preforkd.proto.events import Data, EndOfMessage
    from preforkd.proto.h2 import H2Connection
    from preforkd.wsgi.input import InputStream

    done = 0
    start = time.process_time()
    for reads in traffic:
        server = H2Connection()
        server.initiate()
        server.data_to_send()
        inputs: dict[int, InputStream] = {}
        consumed: dict[int, int] = {}

        def report(nbytes: int) -> None:
            pass

        for data in reads:
            for event in server.receive_data(data, 0.0):
                kind = type(event)
                if kind is Data:
                    sid = event.stream_id  # type: ignore[union-attr]
                    stream = inputs.get(sid)
                    if stream is None:
                        stream = inputs[sid] = InputStream(lambda f: None, report, 1 << 18)
                    stream.feed(event.data, wake=False)  # type: ignore[union-attr]
                elif kind is EndOfMessage:
                    done += 1
            for sid, stream in inputs.items():
                before = stream.bytes_read
                while stream.buffered >= APP_READ:
                    stream.read(APP_READ)
                nbytes = stream.bytes_read - before
                consumed[sid] = consumed.get(sid, 0) + nbytes
                if nbytes:
                    server.acknowledge_received_data(sid, nbytes)
            server.data_to_send()
    return time.process_time() - start, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    interleaved.add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        interleaved.child(args.child, serve)
        return
    traffic = record_traffic()
    results = interleaved.run(__file__, traffic, args.runs, args.compare)
    print(f"{CONNS * STREAMS} uploads of {BODY_SIZE >> 10} KiB per run")
    interleaved.report(results, "us/upload")


if __name__ == "__main__":
    main()
