"""web: a live view of every stream, the alert feed and the recordings, over HTTP (stage in stages.web.stage)."""
