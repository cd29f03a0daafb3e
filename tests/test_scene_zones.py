"""Entry and exit zones learned from tracks: a door mid-picture becomes an exit once enough people have left
through it, a pillar people are hidden behind for a moment does not, and the frame's edge always is one.
Then what uses them: the line counter does not join a person who left through a door beside its line with
someone who appears beyond it, and the tracker does not re-identify a track that left through a door."""

from __future__ import annotations

import numpy as np

from pipeline.categories import category_id
from pipeline.detections import Detections
from pipeline.scene_zones import SceneZones
from stages.analyze.geometry import Line
from stages.analyze.line_counter import LineCounter
from stages.track.stage import KalmanMotion, TrackOptions
from stages.track.tracker import StepInput, Tracker, TrackerSettings

SIZE = (640, 480)
PERSON = category_id("person")


def box_at(x: float, y: float) -> list[float]:
    return [x - 15, y - 80, x + 15, y]  # anchor (bottom centre) at (x, y)


def test_a_door_people_leave_through_is_learned_as_an_exit_and_a_pillar_they_are_hidden_behind_is_not() -> None:
    zones = SceneZones(SIZE, end_after=10, link=10)
    door, pillar, path = box_at(320, 240), box_at(500, 380), box_at(160, 240)
    assert zones.exit_at(np.array([door, pillar, path, box_at(630, 300)])).tolist() == [False, False, False, True]
    frame, next_id = 0, 1
    for person in range(24):
        walker, hidden, found = next_id, next_id + 1, next_id + 2
        next_id += 3
        for step in range(13):  # one walks from the left edge to the door and is gone; another reaches the pillar
            ids = [walker, hidden]
            boxes = [box_at(step * 25, 240), box_at(200 + step * 25, 380)]
            zones.update(frame, np.array(ids), np.array(boxes))
            frame += 1
        for step in range(1, 6):  # hidden behind the pillar a moment, then found again beyond it under a new id
            zones.update(frame, np.array([found] if step >= 4 else [], np.int64), np.array([box_at(500 + 20 * step, 380)] if step >= 4 else []).reshape(-1, 4))
            frame += 1
        for step in range(6):  # and walks out at the right edge
            zones.update(frame, np.array([found]), np.array([box_at(600 + 8 * step, 380)]))
            frame += 1
        if person == 4:  # too few ends yet: only the frame's edge is known
            assert zones.exit_at(np.array([door])).tolist() == [False]
    for _ in range(15):
        zones.update(frame, np.zeros(0, np.int64), np.zeros((0, 4)))
        frame += 1
    assert zones.exit_at(np.array([door, pillar, path])).tolist() == [True, False, False]
    # People came in at the left edge only (the pillar's new ids are the hidden ones found again).
    assert zones.entry_at(np.array([door, pillar, path, box_at(5, 240)])).tolist() == [False, False, False, True]


def test_the_counter_does_not_join_one_who_left_through_a_door_by_the_line_with_one_beyond_it() -> None:
    line = Line.load("road", [[100, 240], [540, 240]], SIZE)  # `in` is upwards

    def count(leavers: int) -> dict[str, int]:
        counter = LineCounter(line, frame_size=SIZE)
        f, tid = 0, 1
        for _ in range(leavers):  # people walk up from the bottom edge into a door 40 px below the line
            for y in np.linspace(480, 280, 12):
                counter.update(f, f / 10, np.array([tid]), np.array([box_at(300, y)]))
                f += 1
            for _ in range(35):  # gone: the counter's tracks end after 3 s unseen
                counter.update(f, f / 10, np.zeros(0, np.int64), np.zeros((0, 4)))
                f += 1
            tid += 1
        for y in np.linspace(480, 280, 12):  # one more goes in; someone appears 40 px beyond the line and walks on
            counter.update(f, f / 10, np.array([tid]), np.array([box_at(300, y)]))
            f += 1
        for k in range(12):
            counter.update(f + 5 + k, (f + 5 + k) / 10, np.array([tid + 1]), np.array([box_at(300, 200 - 6 * k)]))
        return counter.counts

    assert count(0) == {"in": 1, "out": 0}  # nothing learned: the one lost at the line, found again beyond it
    assert count(24) == {"in": 0, "out": 0}  # everyone goes out through that door: it was someone else


def test_the_tracker_does_not_reidentify_a_track_that_left_through_a_door() -> None:
    look = np.eye(8, dtype=np.float32)[0]

    def last_ids(zones: bool) -> list[int]:
        tr = Tracker(KalmanMotion(), TrackerSettings(max_lost_frames=8, scene_zones=zones))
        f = 0

        def step(boxes: list[list[float]]) -> list[int]:
            nonlocal f
            d = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32), np.full(len(boxes), PERSON))
            out = tr.step([StepInput("s", f, d, np.tile(look, (len(boxes), 1)), SIZE)])[0]
            f += 1
            return out.track_ids.tolist()

        for _ in range(25):  # people walk in from the left edge to a door mid-picture, one after another
            for x in np.linspace(20, 320, 41):
                step([box_at(x, 240)])
            for _ in range(10):
                step([])
        for x in np.linspace(20, 320, 41):
            step([box_at(x, 240)])
        for _ in range(5):
            step([])
        return [step([box_at(290, 250)])[0] for _ in range(3)][-1:]  # a look-alike appears by the door

    assert last_ids(zones=False) == [26]  # taken for the last one, found again
    assert last_ids(zones=True) == [27]  # a new person
    assert TrackOptions().settings().scene_zones and not TrackOptions(scene_zones=False).settings().scene_zones  # the config's switch
