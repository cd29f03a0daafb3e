"""The web stage in a real pipeline (`vidpipe run` on a looping file), driven by a real headless browser (Debian's
chromium through Selenium and chromedriver): the live view moves, alerts raised by the pipeline reach the feed, a
recording plays in the page's video element, and nothing is served without the token."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from stages.web.recordings import finished
from tests.helpers.configs import write_config
from tests.helpers.procs import free_ports, run_vidpipe, stop, vidpipe, wait_for

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (tests/run.sh installs them)")
TOKEN = "s3cret-token-for-the-test"
PLAYER_STATE = ("const v = document.getElementById('player'); return [v.src, v.readyState, v.played.length, v.paused, v.currentTime, "
                "v.error && v.error.message, document.getElementById('player-status').textContent]")
README_SHOT = Path(__file__).resolve().parent.parent / "docs" / "web-live.jpg"  # VIDPIPE_README_SHOTS=1 remakes it


# The default chain up to the tracks: what the analyze stage of each test observes.
DETECT_AND_TRACK: list[dict[str, Any]] = [
    {"name": "decode", "kind": "decode"},
    {"name": "infer", "kind": "infer", "options": {"detector": {"type": "coco_ssd", "score_threshold": 0.2}}},
    {"name": "track", "kind": "track"},
]


def live_config(tmp_path: Path, samples: Path, web_port: int, recordings: Path) -> Path:
    stages: list[dict[str, Any]] = [
        *DETECT_AND_TRACK,
        {"name": "analyze", "kind": "analyze", "publish": "auto", "options": {"streams": {"vtest": {
            "frame_size": [768, 576],
            "zones": {"grass": {"points": [[0, 251], [170, 271], [300, 299], [420, 349], [560, 404], [767, 496], [767, 575], [0, 575]]}},
            "lines": {"crossing": {"points": [[460, 195], [460, 360]]}},
            # Fires at every crossing either way: several a minute on vtest.avi.
            "rules": [{"name": "crossing-any", "type": "line_crossing", "line": "crossing", "direction": "any", "classes": ["person"]}],
        }}}},
        {"name": "alert", "kind": "alert", "options": {"outbox": str(tmp_path / "outbox.db")}},  # the alert history the page reads
        # Live segments of 2 s beside the replay's video: each playable once closed.
        {"name": "record", "kind": "record", "options": {"out_dir": str(recordings), "jsonl": False, "segment_s": 2.0}},
        {"name": "web", "kind": "web", "input_pattern": "sub",
         "options": {"port": web_port, "token": "${WEB_TOKEN}", "recordings": str(recordings)}},
    ]  # fmt: skip
    return write_config(tmp_path / "live.yaml", [{"id": "vtest", "source": str(samples / "vtest.avi"), "loop": True}], tmp_path,
                        mode="live", port_base=None, stages=stages, run_dir=tmp_path / "run")  # fmt: skip


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=opts)
    try:
        yield driver
    finally:
        driver.quit()  # ends chromedriver and the browser it started


@needs_browser
@pytest.mark.slow
def test_live_page_alerts_recordings_and_token(tmp_path: Path, samples: Path, browser: Any) -> None:
    # A recording as the record stage writes it: a short replay's H.264 file.
    clip = tmp_path / "clip"
    clip.mkdir()
    recordings = tmp_path / "recordings"
    done = run_vidpipe("replay", str(samples / "vtest.avi"), "--out", str(recordings), "--quiet", "--config", str(write_config(
        tmp_path / "replay.yaml", [{"id": "x", "source": "x.avi"}], recordings, stages=[
            {"name": "decode", "kind": "decode", "options": {}}, {"name": "infer", "kind": "infer"},
            {"name": "record", "kind": "record", "options": {"out_dir": str(recordings)}}])), timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (recordings / "vtest.mp4").is_file()

    (web_port,) = free_ports(1)
    cfg = live_config(tmp_path, samples, web_port, recordings)
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "run.log", env={"WEB_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(lambda: requests.get(f"{base}/healthz", timeout=1).ok, 60, what="the web stage")
        # Without the token: 401 for the page, the API, the pictures and the recordings.
        for path in ("/", "/api/streams", "/streams/vtest/frame.jpg", "/recordings/vtest.mp4", "/api/alerts/live", "/docs"):
            assert requests.get(base + path, timeout=5).status_code == 401, path
        assert requests.get(base + "/api/streams", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        wait_for(lambda: requests.get(f"{base}/api/streams", headers=auth, timeout=2).json()[0]["frames"] > 5, 60, what="frames at the web stage")
        openapi = requests.get(f"{base}/openapi.json", headers=auth, timeout=5).json()
        assert {"/api/streams", "/api/alerts", "/api/alerts/live", "/api/recordings"} <= set(openapi["paths"])

        browser.get(f"{base}/?token={TOKEN}")  # a first visit by link; the page's own requests then carry a cookie
        img = wait_for(lambda: browser.find_element("css selector", ".stream[data-stream='vtest'] img"), 20, what="the stream's card")
        wait_for(lambda: browser.execute_script("return arguments[0].naturalWidth", img) == 768, 20, what="a live picture")
        shots = []
        for _ in range(3):
            shots.append(img.screenshot_as_png)
            time.sleep(0.7)
        assert len(set(shots)) == 3, "the live picture does not move"
        figures = browser.find_element("css selector", ".stream[data-stream='vtest'] .fig").text
        assert "fps" in figures and "age" in figures, figures
        # An alert the pipeline raises shows in the feed within a second of reaching the web stage.
        browser.execute_script(
            "window.shown = []; new MutationObserver(ms => ms.forEach(m => m.addedNodes.forEach(n => {"
            " if (n.dataset && n.dataset.rule) window.shown.push([n.dataset.rule, Date.now() / 1000]); })))"
            ".observe(document.getElementById('alerts'), {childList: true});"
        )  # fmt: skip
        shown = wait_for(lambda: browser.execute_script("return window.shown.length ? window.shown : null"), 90, interval=0.2, what="an alert in the feed")
        assert shown[0][0] == "crossing-any"  # type: ignore[index]
        # The history comes from the alert stage's outbox, with snapshots and paging.
        history = wait_for(lambda: requests.get(f"{base}/api/alerts", params={"rule": "crossing-any"}, headers=auth, timeout=5).json(), 10, what="the history")
        assert history["source"] == "outbox" and history["total"] >= 1  # type: ignore[index]
        first = history["alerts"][-1]  # type: ignore[index]
        snap = requests.get(base + first["snapshot_url"], headers=auth, timeout=5)
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
        paged = requests.get(f"{base}/api/alerts", params={"limit": 1, "offset": 0}, headers=auth, timeout=5).json()
        assert len(paged["alerts"]) == 1 and paged["total"] >= history["total"]  # type: ignore[index]
        alerts = browser.execute_script("return window.feedAlerts")  # as they came over the feed
        newest = max(alerts, key=lambda a: a["received_ts"])
        latency = shown[-1][1] - newest["received_ts"]  # type: ignore[index]
        assert -0.5 < latency < 1.0, f"the alert took {latency:.2f} s from the web stage to the page"
        # From the alert to its moment in the recording: the live segment that holds it plays from there.
        alert_ts = newest["capture_ts"]
        wait_for(lambda: requests.get(f"{base}/api/recordings/moment", params={"stream": "vtest", "ts": alert_ts}, headers=auth, timeout=5).ok,
                 20, what="the alert's segment closed")  # fmt: skip
        browser.execute_script("document.querySelector(`#alerts li[data-id='${arguments[0]}'] a.jump`).click()", newest["id"])
        # (A 2 s segment may have played to its end by the time this looks: `played` says it did play.)
        try:
            wait_for(lambda: browser.execute_script("const v = document.getElementById('player'); return v.readyState >= 2 && v.played.length > 0 && v.src.includes('/recordings/vtest-')"),
                     20, what="the alert's segment playing")  # fmt: skip
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; player (src, readyState, played, paused, currentTime, error, status): {browser.execute_script(PLAYER_STATE)}") from None
        offset = float(browser.execute_script("return document.getElementById('player').dataset.offset"))
        assert abs(browser.execute_script("return document.getElementById('player').played.start(0)") - offset) < 0.5  # it played from there
        # The timeline: a bar per stream over its closed segments; a click plays the stream from that moment.
        browser.execute_script("const p = document.getElementById('player'); p.removeAttribute('src'); p.load(); loadRecordings();")
        wait_for(lambda: browser.find_elements("css selector", ".tl-bar[data-stream='vtest'] .tl-seg.tl-alert"), 15, what="an alerted segment on the timeline")

        def click_bar() -> bool:  # found again each try: the timeline is redrawn when the recordings are listed again
            bar = browser.find_element("css selector", ".tl-bar[data-stream='vtest']")
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", bar)
            bar.click()  # its middle
            return True

        wait_for(click_bar, 10, what="a click on the timeline")
        wait_for(lambda: browser.execute_script("const v = document.getElementById('player'); return v.readyState >= 2 && v.played.length > 0 && v.src.includes('/recordings/vtest-')"),
                 20, what="the timeline's moment playing")  # fmt: skip
        # A clip around the alert, cut from the segments without re-encoding (once the segments that hold it closed).
        wait_for(lambda: requests.get(f"{base}/api/recordings/moment", params={"stream": "vtest", "ts": alert_ts + 2.5}, headers=auth, timeout=5).ok,
                 20, what="the segment after the alert's closed")  # fmt: skip
        clip = requests.get(f"{base}/api/clip", params={"stream": "vtest", "start": alert_ts - 1, "end": alert_ts + 1}, headers=auth, timeout=30)
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
        (tmp_path / "clip.mp4").write_bytes(clip.content)
        import av

        with av.open(str(tmp_path / "clip.mp4")) as c:
            assert 15 <= sum(1 for _ in c.decode(video=0)) <= 45  # 2 s at 10 fps (live may shed a frame), from the keyframe up to 2 s before
        # The page's filter asks the history: a rule shows its alerts, a stream that is not there none.
        browser.find_element("id", "af-rule").send_keys("crossing-any")
        browser.find_element("id", "af-go").click()
        wait_for(lambda: "in all (outbox)" in browser.find_element("id", "af-total").text, 10, what="the filtered history")
        assert {li.get_attribute("data-rule") for li in browser.find_elements("css selector", "#alerts li")} == {"crossing-any"}
        browser.find_element("id", "af-stream").send_keys("nowhere")
        browser.find_element("id", "af-go").click()
        wait_for(lambda: browser.find_element("id", "af-total").text.startswith("0 in all"), 10, what="an empty history")
        # The replay's whole video plays in the page's video element (H.264 from the record stage; byte ranges for seeking).
        item = wait_for(lambda: browser.find_element("css selector", "#recordings li[data-url='/recordings/vtest.mp4']"), 20, what="the recording listed")
        item.click()
        wait_for(lambda: browser.execute_script("const v = document.getElementById('player'); return v.readyState >= 2 && v.currentTime > 0.3"),
                 20, what="the video playing")  # fmt: skip
        assert browser.execute_script("return document.getElementById('player').videoWidth") == 768
        ranged = requests.get(f"{base}/recordings/vtest.mp4", headers={**auth, "Range": "bytes=0-99"}, timeout=5)
        assert ranged.status_code == 206 and len(ranged.content) == 100
        if os.environ.get("VIDPIPE_README_SHOTS"):
            import cv2
            import numpy as np

            browser.execute_script("for (const id of ['af-stream', 'af-rule']) document.getElementById(id).value = ''; filterAlerts(0); window.scrollTo(0, 0);")
            time.sleep(1.5)  # the history and the next live pictures
            README_SHOT.parent.mkdir(exist_ok=True)
            shot = cv2.imdecode(np.frombuffer(browser.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
            cv2.imwrite(str(README_SHOT), shot, [cv2.IMWRITE_JPEG_QUALITY, 85])
    finally:
        assert stop(proc) in (0, 130), (tmp_path / "run.log").read_text()[-3000:]


@needs_browser
@pytest.mark.slow
def test_a_zone_drawn_in_the_page_is_saved_to_the_config_and_used_by_the_next_alert(tmp_path: Path, samples: Path, browser: Any) -> None:
    (web_port,) = free_ports(1)
    stages: list[dict[str, Any]] = [
        *DETECT_AND_TRACK,
        {"name": "analyze", "kind": "analyze", "publish": "auto", "options": {"streams": {"vtest": {
            "frame_size": [768, 576],
            "zones": {"door": {"points": [[0, 0], [24, 0], [24, 24], [0, 24]]}},  # a corner nobody walks into
            "rules": [{"name": "at-the-door", "type": "zone_intrusion", "zone": "door", "classes": ["person"]}],
        }}}},
        # Segments of 1 s, pruned to 0.3 MB while the pipeline runs (never the one being written).
        {"name": "record", "kind": "record", "options": {"out_dir": str(tmp_path / "rec"), "jsonl": False, "segment_s": 1.0,
                                                         "retention": {"max_total_mb": 0.3, "check_every_s": 1.0}}},
        {"name": "web", "kind": "web", "input_pattern": "sub", "options": {"port": web_port}},
    ]  # fmt: skip
    cfg = write_config(tmp_path / "live.yaml", [{"id": "vtest", "source": str(samples / "vtest.avi"), "loop": True}], tmp_path,
                       mode="live", port_base=None, stages=stages, run_dir=tmp_path / "run")  # fmt: skip
    before = cfg.read_text()
    proc = vidpipe("run", str(cfg), log_path=tmp_path / "run.log")
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(lambda: requests.get(f"{base}/api/streams", timeout=2).json()[0]["frames"] > 5, 60, what="frames at the web stage")
        assert requests.get(f"{base}/api/geometry/none", timeout=5).status_code == 404
        first = wait_for(lambda: sorted((tmp_path / "rec").glob("vtest-*.json")), 20, what="a closed segment")[0]  # type: ignore[index]
        # A viewer that stops reading slows nothing: the frames go on at the web stage (and the pipeline never waits on it).
        stalled = socket.create_connection(("127.0.0.1", web_port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /streams/vtest/live.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = requests.get(f"{base}/api/streams", timeout=2).json()[0]["frames"]
        time.sleep(4)
        assert requests.get(f"{base}/api/streams", timeout=2).json()[0]["frames"] >= seen + 25
        stalled.close()
        # A polygon that crosses itself is refused with the field path `vidpipe check` would name; the file stays.
        bad = requests.put(f"{base}/api/streams/vtest/geometry", json={"frame_size": [768, 576], "zones": {"door": [[0, 0], [700, 500], [700, 0], [0, 500]]}}, timeout=10)
        assert bad.status_code == 422, bad.text
        assert bad.json()["problems"][0]["path"].startswith("stages[3].options.streams.vtest") and "intersects itself" in bad.text
        assert cfg.read_text() == before

        browser.get(base + "/")
        wait_for(lambda: browser.find_element("css selector", ".stream[data-stream='vtest'] button.edit"), 20, what="the stream's card").click()
        canvas = browser.find_element("id", "ed-canvas")
        wait_for(lambda: canvas.rect["width"] > 100 and browser.execute_script("return arguments[0].width", canvas) > 100, 20, what="the editor's picture")
        browser.find_element("id", "ed-name").send_keys("door")
        browser.find_element("id", "ed-zone").click()
        from selenium.webdriver.common.action_chains import ActionChains

        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        w, h = canvas.rect["width"], canvas.rect["height"]
        for fx, fy in ((0.02, 0.02), (0.98, 0.02), (0.98, 0.98), (0.02, 0.98)):  # the whole frame: people are in it now
            ActionChains(browser).move_to_element_with_offset(canvas, int((fx - 0.5) * w), int((fy - 0.5) * h)).click().perform()
        browser.find_element("id", "ed-finish").click()
        browser.find_element("id", "ed-save").click()
        wait_for(lambda: browser.find_element("id", "ed-status").get_attribute("data-saved") == "1", 10, what="saved")
        text = cfg.read_text()
        assert text != before and "door: {points: [[" in text, text
        saved = requests.get(f"{base}/api/streams/vtest/geometry", timeout=5).json()["zones"]["door"]
        assert len(saved) == 4 and saved[0][0] < 40 and saved[1][0] > 728 and saved[2][1] > 540, saved
        # The live picture draws the new zone (its left edge, yellow, where there was grass).
        x = int(round(saved[0][0]))

        def edge_drawn() -> bool:
            import cv2
            import numpy as np

            jpeg = requests.get(f"{base}/streams/vtest/frame.jpg", timeout=5).content
            strip = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[250:350, max(0, x - 3) : x + 4].astype(int)
            return bool(((strip[..., 0] < 90) & (strip[..., 1] > 170) & (strip[..., 2] > 200)).mean(axis=1).min() > 0)

        wait_for(edge_drawn, 15, interval=0.5, what="the new zone in the live picture")
        # The running analyze stage takes the new zone without a restart: the next alert is raised in it.
        alerts = wait_for(lambda: requests.get(f"{base}/api/alerts", params={"rule": "at-the-door"}, timeout=5).json()["alerts"], 60, what="an alert in the new zone")
        assert alerts[0]["details"]["zone"] == "door"  # type: ignore[index]
        assert "analytics reloaded from" in (tmp_path / "run.log").read_text()
        # Retention while the pipeline runs: the oldest segments are gone, the folder stays near its limit, and the
        # segment being written is there (it is never removed).
        wait_for(lambda: not first.exists() and not first.with_suffix(".mp4").exists(), 20, what="the first segment pruned")
        segments = sorted((tmp_path / "rec").glob("vtest-*.mp4"))
        assert sum(p.stat().st_size for p in segments) < 0.3 * 2**20 + 2 * max(p.stat().st_size for p in segments)
        assert any(not finished(p) for p in segments), "the segment being written is missing"
    finally:
        assert stop(proc) in (0, 130), (tmp_path / "run.log").read_text()[-3000:]
