"""An HTTP MJPEG camera for tests: serves a real video's frames as multipart/x-mixed-replace JPEGs."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2


class MjpegServer:
    def __init__(self, video: Path, port: int, fps: float = 25.0) -> None:
        cap = cv2.VideoCapture(str(video))
        self.jpegs: list[bytes] = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
        cap.release()
        jpegs, period = self.jpegs, 1.0 / fps
        stopping = self.stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not stopping.is_set():
                        jpg = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg))
                        self.wfile.write(jpg + b"\r\n")
                        i += 1
                        time.sleep(period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
