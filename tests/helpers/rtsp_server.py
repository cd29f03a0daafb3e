#!/usr/bin/python3
"""Tiny local RTSP server for tests (GStreamer gst-rtsp-server via PyGObject).

Run it under the *system* python, which has the Debian GStreamer bindings:

    /usr/bin/python3 tests/helpers/rtsp_server.py --port 8554 --path /cam
    /usr/bin/python3 tests/helpers/rtsp_server.py --port 8554 --path /cam \
        --video sample_videos/vtest.avi

Without --video it serves a live videotestsrc pattern (moving ball plus a
running timestamp, 320x240 at 15 fps by default). With --video it decodes the
file, loops it forever at its native frame rate and serves it as H.264.

The server listens on 127.0.0.1 only. Once the socket is listening it prints
exactly one line to stdout, e.g. ``READY rtsp://127.0.0.1:8554/cam``, and flushes
it. ``--port 0`` picks a free port; the READY line shows the one picked.
SIGTERM or SIGINT stops it cleanly with exit status 0. Everything else (log
messages, errors) goes to stderr. Exit status 2 means a bad argument or a
missing GStreamer element, 1 a runtime failure (port in use, file unreadable).

Debian packages needed:
    python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
    (gstreamer1.0-x for the timestamp overlay; optional)

How the file is looped: a separate "producer" pipeline decodes the file into
an intervideosink and seeks back to 0 on EOS; the RTSP media reads frames
from the matching intervideosrc, which is a live source. So the RTSP side never
sees EOS or a seek, and a client that joins late gets the current frame, the
way a real camera behaves. The media is shared, so several clients can watch.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstPbutils", "1.0")
from gi.repository import GLib, Gst, GstPbutils, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
ENCODERS = ("x264enc", "openh264enc", "avenc_h264_omx")


def log(msg):
    print("rtsp_server: %s" % msg, file=sys.stderr, flush=True)


def have(element):
    return Gst.ElementFactory.find(element) is not None


def pick_encoder(requested):
    """Name of the H.264 encoder to use, or None (after logging why)."""
    if requested != "auto":
        if not have(requested):
            log("encoder %s is not installed" % requested)
            return None
        return requested
    for name in ENCODERS[:2]:  # avenc_h264_omx needs OpenMAX hardware
        if have(name):
            return name
    log("no H.264 encoder (install gstreamer1.0-plugins-ugly for x264enc "
        "or gstreamer1.0-plugins-bad for openh264enc)")
    return None


def encoder_desc(name, fps, bitrate_kbps):
    # A key frame every ~1 s, so a client that joins late starts quickly.
    gop = max(1, int(round(fps)))
    if name == "x264enc":
        # tune=zerolatency turns on sliced-threads (several slices a frame);
        # OpenCV's bundled FFmpeg then decodes parts of each P-frame wrongly
        # (static areas vanish), so keep one slice per frame.
        return ("x264enc tune=zerolatency sliced-threads=false "
                "speed-preset=ultrafast key-int-max=%d bitrate=%d" % (gop, bitrate_kbps))
    if name == "openh264enc":
        return ("openh264enc complexity=low gop-size=%d bitrate=%d"
                % (gop, bitrate_kbps * 1000))
    return "avenc_h264_omx gop-size=%d bitrate=%d" % (gop, bitrate_kbps * 1000)


def probe_video(path):
    """Return (width, height, fps_num, fps_den) of the first video stream."""
    uri = Gst.filename_to_uri(os.path.abspath(path))
    info = GstPbutils.Discoverer.new(10 * Gst.SECOND).discover_uri(uri)
    streams = info.get_video_streams()
    if not streams:
        raise RuntimeError("no video stream in %s" % path)
    v = streams[0]
    num, den = v.get_framerate_num(), v.get_framerate_denom()
    if num <= 0 or den <= 0:
        num, den = 25, 1
    return v.get_width(), v.get_height(), num, den


class FileLooper:
    """Plays a file into intervideosink in real time, forever."""

    def __init__(self, path, channel):
        self.pipeline = Gst.parse_launch(
            "filesrc location=%s ! decodebin ! videoconvert ! "
            "video/x-raw,format=I420 ! intervideosink channel=%s sync=true"
            % (_gst_quote(os.path.abspath(path)), channel))
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_message)
        self.error = None

    def start(self):
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("cannot play the video file")

    def stop(self):
        self.pipeline.set_state(Gst.State.NULL)
        self.pipeline.get_bus().remove_signal_watch()

    def _on_message(self, _bus, msg):
        if msg.type == Gst.MessageType.EOS:
            if not self.pipeline.seek_simple(
                    Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0):
                log("loop seek failed; restarting the file pipeline")
                self.pipeline.set_state(Gst.State.READY)
                self.pipeline.set_state(Gst.State.PLAYING)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log("file pipeline error: %s (%s)" % (err.message, dbg))
            self.error = err.message


def _gst_quote(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8554,
                    help="TCP port on 127.0.0.1 (0 = pick a free one)")
    ap.add_argument("--path", default="/cam", help="mount path (default /cam)")
    ap.add_argument("--video", help="video file to loop (default: test pattern)")
    ap.add_argument("--width", type=int, default=320, help="test pattern width")
    ap.add_argument("--height", type=int, default=240, help="test pattern height")
    ap.add_argument("--fps", type=int, default=15, help="test pattern frame rate")
    ap.add_argument("--bitrate", type=int, default=1500, help="H.264 kbit/s")
    ap.add_argument("--encoder", default="auto", choices=("auto",) + ENCODERS)
    args = ap.parse_args(argv)

    if not args.path.startswith("/"):
        ap.error("--path must start with '/'")
    if not 0 <= args.port <= 65535:
        ap.error("--port out of range")

    Gst.init(None)
    for el in ("rtph264pay", "videoconvert"):
        if not have(el):
            log("missing GStreamer element %s" % el)
            return 2
    enc_name = pick_encoder(args.encoder)
    if enc_name is None:
        return 2

    looper = None
    if args.video:
        if not os.path.isfile(args.video):
            log("no such file: %s" % args.video)
            return 2
        if not have("intervideosrc"):
            log("missing intervideosrc (gstreamer1.0-plugins-bad)")
            return 2
        try:
            w, h, fn, fd = probe_video(args.video)
        except (GLib.Error, RuntimeError) as e:
            log("cannot read %s: %s" % (args.video, e))
            return 1
        fps = fn / fd
        channel = "rtsp_server_%d" % os.getpid()
        src = ("intervideosrc channel=%s timeout=%d ! "
               "video/x-raw,format=I420,width=%d,height=%d,framerate=%d/%d"
               % (channel, 5 * Gst.SECOND, w, h, fn, fd))
        looper = FileLooper(args.video, channel)
        desc_src = "%s (%dx%d @ %.4g fps, looped)" % (args.video, w, h, fps)
    else:
        fps = args.fps
        overlay = (" ! timeoverlay halignment=left valignment=top font-desc=\"Sans 12\""
                   if have("timeoverlay") else "")
        src = ("videotestsrc is-live=true pattern=ball ! "
               "video/x-raw,width=%d,height=%d,framerate=%d/1%s"
               % (args.width, args.height, args.fps, overlay))
        desc_src = "videotestsrc %dx%d @ %d fps" % (args.width, args.height, args.fps)

    launch = ("( %s ! videoconvert ! video/x-raw,format=I420 ! queue max-size-buffers=2 "
              "leaky=downstream ! %s ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
              % (src, encoder_desc(enc_name, fps, args.bitrate)))

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)

    if looper is not None:
        try:
            looper.start()
        except RuntimeError as e:
            log(str(e))
            looper.stop()
            return 1

    source_id = server.attach(None)
    if source_id == 0:
        log("cannot listen on %s:%d (port in use?)" % (HOST, args.port))
        if looper is not None:
            looper.stop()
        return 1

    loop = GLib.MainLoop()
    status = {"rc": 0}

    def on_signal(signum):
        log("signal %d, shutting down" % signum)
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, on_signal, signal.SIGTERM)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, on_signal, signal.SIGINT)

    def check_looper():
        if looper is not None and looper.error:
            status["rc"] = 1
            loop.quit()
            return GLib.SOURCE_REMOVE
        return GLib.SOURCE_CONTINUE

    if looper is not None:
        GLib.timeout_add(500, check_looper)

    url = "rtsp://%s:%d%s" % (HOST, server.get_bound_port(), args.path)
    log("serving %s with %s" % (desc_src, enc_name))
    print("READY " + url, flush=True)

    try:
        loop.run()
    finally:
        GLib.source_remove(source_id)
        pool = server.get_session_pool()
        pool.filter(lambda _pool, _sess: GstRtspServer.RTSPFilterResult.REMOVE)
        if looper is not None:
            looper.stop()
    return status["rc"]


if __name__ == "__main__":
    sys.exit(main())
