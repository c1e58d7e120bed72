#!/usr/bin/env python3
"""Sends exactly TOTAL keep-alive GET requests to URL over CONNECTIONS
connections (one thread each) and fails unless every answer is a 200.

    python3 bench/gateway/count.py URL TOTAL [CONNECTIONS]
"""
import http.client
import sys
import threading
import urllib.parse


def main():
    url = urllib.parse.urlsplit(sys.argv[1])
    total = int(sys.argv[2])
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    path = url.path or "/"
    failures = []

    def client(count):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            for _ in range(count):
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(response.status)
        except OSError as error:
            failures.append(str(error))
        finally:
            conn.close()

    share, rest = divmod(total, connections)
    threads = [
        threading.Thread(target=client, args=(share + (1 if i < rest else 0),))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        print(f"{len(failures)} failed: {failures[:5]}", file=sys.stderr)
        sys.exit(1)


main()
