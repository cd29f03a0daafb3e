#!/usr/bin/env bash
# The test command of the README, also what CI runs: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's GStreamer RTSP server (run by the RTSP tests under the system python3), the mosquitto MQTT
# broker (alert delivery tests), promtool and amtool (deploy/prometheus, deploy/docker), docker-compose
# (validates deploy/docker/compose.yaml without an engine), iproute2 (stages on network namespaces) and
# chromium with its chromedriver (the web stage's page in a real headless browser).
SYSTEM_PACKAGES=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  mosquitto prometheus prometheus-alertmanager docker-compose iproute2 chromium chromium-driver)
export PATH="$PATH:/usr/sbin:/sbin"
missing=0
for tool in mosquitto promtool amtool docker-compose ip chromium chromedriver; do command -v "$tool" >/dev/null || missing=1; done
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null || [ "$missing" = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${SYSTEM_PACKAGES[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
  else
    echo "note: system packages missing and not root: the tests that need them will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
# torch first, pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
"$PY" -c 'import torch' 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e '.[test,faces]'
# The style and types the code keeps (rule sets and settings in pyproject.toml): a finding fails the run.
"$PY" -m ruff check .
"$PY" -m mypy
# -v: each test's name as it starts and the share done so far, so a long run shows where it is.
exec "$PY" -m pytest -v "$@"
