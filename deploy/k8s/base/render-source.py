"""Init container of a decode pod: the pipeline config with this pod's camera source completed.

    python render-source.py SRC DST      (stream: $VIDPIPE_STREAM)

Reads SRC (the ConfigMap's pipeline.yaml), replaces every ${VIDPIPE_NAME} in the source of stream
$VIDPIPE_STREAM by the environment variable VIDPIPE_NAME (set from the Secret vidpipe-cameras) and writes
DST (mode 0600, an emptyDir the decode container reads). Other streams' sources are left as they are:
this pod reads only its own. Exits 1, naming what is missing, when the stream is not in the config or a
variable its source names is not set; a source without ${...} (a file in the demo) is copied unchanged.
"""

import os
import re
import sys

import yaml

PLACEHOLDER = re.compile(r"\$\{(VIDPIPE_[A-Z0-9_]+)\}")


def main(src: str, dst: str) -> int:
    stream = os.environ.get("VIDPIPE_STREAM", "")
    with open(src, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    found = [s for s in cfg.get("streams") or [] if isinstance(s, dict) and s.get("id") == stream]
    if not found:
        print(f"render-source: no stream {stream!r} in {src}", file=sys.stderr)
        return 1
    source = found[0].get("source")
    if isinstance(source, str):
        missing = sorted({name for name in PLACEHOLDER.findall(source) if name not in os.environ})
        if missing:
            print(
                f"render-source: stream {stream}: {', '.join(missing)} not set "
                "(create the Secret vidpipe-cameras with that key: see deploy/k8s/README.md)",
                file=sys.stderr,
            )
            return 1
        found[0]["source"] = PLACEHOLDER.sub(lambda m: os.environ[m.group(1)], source)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    print(f"render-source: {dst} written for stream {stream}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
