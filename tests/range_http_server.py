"""A local HTTP file server for download tests: Range/If-Range support and scripted connection drops.

    with RangeServer({"/zips/val2017.zip": data}) as srv:
        srv.drop["/zips/val2017.zip"] = [1000]   # next GET of it longer than 1000 bytes: cut there
        url = srv.url + "/zips/val2017.zip"
        srv.requests  -> [(method, path, Range header or None, status), ...]
"""
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _record(self, status):
        self.server.owner.requests.append((self.command, self.path, self.headers.get("Range"), status))

    def do_GET(self):
        owner = self.server.owner
        data = owner.files.get(self.path)
        if data is None:
            self._record(404)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"%s"' % hashlib.md5(data).hexdigest()
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and rng.startswith("bytes=") and (if_range is None or if_range == etag):
            first, last = rng[len("bytes="):].split("-", 1)
            start, end = int(first), min(int(last or end), end)
            if start >= len(data):
                self._record(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        drops = owner.drop.get(self.path)
        try:
            if drops and len(body) > drops[0]:
                self.wfile.write(body[:drops.pop(0)])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            self.close_connection = True


class RangeServer:
    def __init__(self, files):
        self.files = dict(files)
        self.drop = {}
        self.requests = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port():
    """A 127.0.0.1 port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
