-- wrk script for h1-post1m: POST a 1 MiB body (wrk adds the Content-Length).
wrk.method = "POST"
wrk.body = string.rep("a", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
