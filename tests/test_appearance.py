"""Appearance embeddings of the tracker: output contract (in float32 and in the bfloat16 that "auto" picks on
CPUs with native bf16), crops taken on the device, the fused oneDNN path against plain PyTorch, and that the
bundled fine-tuned weights tell a parked car seen twice apart from different people on real vtest.avi frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stages.track.appearance import DEFAULT_WEIGHTS, MEAN_RGB, STD_RGB, AppearanceConfig, AppearanceEncoder, cut_crops
from stages.track.appearance_net import AppearanceNet, crop_batch
from tools.tracklets import read_frames

VTEST = Path(__file__).resolve().parent.parent / "sample_videos" / "vtest.avi"
# Picked by eye on frames 100 and 250 (xyxy pixels): the white van and the light-blue car are parked all
# clip long; p1-p3 are three different people walking in frame 250.
VAN = (648, 40, 724, 100)
CAR = (732, 48, 768, 96)
PEOPLE_250 = ((370, 228, 424, 328), (596, 252, 644, 354), (543, 186, 582, 268))


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def encoder(request: pytest.FixtureRequest) -> AppearanceEncoder:
    return AppearanceEncoder(precision=request.param)


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    return {i: img for i, img in read_frames(VTEST, 100, 251) if i in (100, 250)}


def boxes(*b: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(b, np.float32).reshape(-1, 4)


def test_shapes_dtypes_and_unit_norm(encoder: AppearanceEncoder, frames: dict[int, np.ndarray]) -> None:
    small = cv2.resize(frames[250], (320, 240))  # frames of one batch may differ in size
    out = encoder.embed([frames[250], small], [boxes(*PEOPLE_250), boxes((10, 20, 60, 120), (100, 50, 140, 200))])
    assert [e.shape for e in out] == [(3, encoder.dim), (2, encoder.dim)]
    for e in out:
        assert e.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_no_boxes(encoder: AppearanceEncoder, frames: dict[int, np.ndarray]) -> None:
    img = frames[250]
    assert encoder.embed([], []) == []
    out = encoder.embed([img, img], [boxes(), np.zeros((0, 4), np.float64)])
    assert [e.shape for e in out] == [(0, encoder.dim), (0, encoder.dim)]
    out = encoder.embed([img, img, img], [boxes(), boxes(VAN), boxes()])
    assert [e.shape for e in out] == [(0, encoder.dim), (1, encoder.dim), (0, encoder.dim)]
    assert all(e.dtype == np.float32 for e in out)


def test_boxes_partly_outside_the_frame(encoder: AppearanceEncoder, frames: dict[int, np.ndarray]) -> None:
    img = frames[250]
    h, w = img.shape[:2]
    outside = boxes((-30, 100, 30, 200), (w - 20, h - 50, w + 40, h + 70), (700, -40, 800, 60), (-9, -9, w + 9, h + 9))
    (e,) = encoder.embed([img], [outside])
    assert np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # The part beyond the frame reads as the mean colour (0 once normalised); the part inside is the image.
    crop = crop_batch([torch.from_numpy(img)], [torch.tensor([[-32.0, 100.0, 32.0, 228.0]])], 64, 32)[0]
    assert crop[:, :, :16].abs().max() == 0.0
    inside = crop_batch([torch.from_numpy(img)], [torch.tensor([[0.0, 100.0, 32.0, 228.0]])], 64, 16)[0]
    torch.testing.assert_close(crop[:, :, 16:], inside, atol=1e-4, rtol=0)


def test_one_forward_equals_per_image_calls(encoder: AppearanceEncoder, frames: dict[int, np.ndarray]) -> None:
    imgs = [frames[100], frames[250], frames[250][::2, ::2]]
    bxs = [boxes(VAN, CAR), boxes(*PEOPLE_250), boxes((10, 10, 50, 90), (100.5, 60.25, 130.75, 140))]
    together = encoder.embed(imgs, bxs)
    for img, b, t in zip(imgs, bxs, together):
        (alone,) = encoder.embed([img], [b])
        np.testing.assert_allclose(t, alone, atol=2e-4)
        for i in range(len(b)):  # batch size 1 too
            np.testing.assert_allclose(t[i : i + 1], encoder.embed([img], [b[i : i + 1]])[0], atol=2e-4)


def test_parked_cars_match_across_frames_better_than_different_people(
    encoder: AppearanceEncoder, frames: dict[int, np.ndarray]
) -> None:
    e100, e250 = encoder.embed([frames[100], frames[250]], [boxes(VAN, CAR), boxes(VAN, CAR, *PEOPLE_250)])
    sim = e100 @ e250.T  # rows: van, car at frame 100; columns: van, car, p1, p2, p3 at frame 250
    people = e250[2:] @ e250[2:].T
    hardest_people_pair = people[np.triu_indices(3, 1)].max()
    for i in range(2):  # the same parked vehicle is closer to itself than to anything else...
        assert sim[i, i] > np.delete(sim[i], i).max()
        # ...and closer than any two different people are to each other
        assert sim[i, i] > hardest_people_pair


def test_fast_path_matches_plain_pytorch(frames: dict[int, np.ndarray]) -> None:
    """Folded batch norm and fused oneDNN convolutions change nothing in float32; bfloat16 stays close."""
    ckpt = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    config = AppearanceConfig.from_dict(ckpt["config"])
    net = AppearanceNet(config).eval()
    net.load_state_dict(ckpt["state_dict"])
    b = boxes(VAN, CAR, *PEOPLE_250, (-20, 300, 40, 420))
    with torch.inference_mode():
        x = crop_batch([torch.from_numpy(frames[250])], [torch.from_numpy(b)], config.crop_h, config.crop_w)
        ref = net(x.contiguous()).numpy()
    (fp32,) = AppearanceEncoder(precision="float32").embed([frames[250]], [b])
    np.testing.assert_allclose(fp32, ref, atol=1e-5)
    (bf16,) = AppearanceEncoder(precision="bfloat16").embed([frames[250]], [b])
    assert (bf16 * ref).sum(1).min() > 0.99


# Shrinking boxes compare whole; for an enlarged box cv2 repeats the crop's edge pixels where the device crop
# reads the frame just beyond the box, so its outermost row and column are left out.
@pytest.mark.parametrize(
    ("box", "border"),
    [((600, 40, 730, 104), 0), ((370, 228, 424, 328), 0), ((10, 300, 80, 420), 0), ((380, 240, 400, 270), 1)],
)
def test_device_crop_matches_cv2_crop_and_resize(
    frames: dict[int, np.ndarray], box: tuple[int, int, int, int], border: int
) -> None:
    img = frames[250]
    x1, y1, x2, y2 = box
    ref = cv2.resize(img[y1:y2, x1:x2], (32, 64), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32)
    got = crop_batch([torch.from_numpy(img)], [torch.tensor([box], dtype=torch.float32)], 64, 32)[0]
    raw = (got * torch.tensor(STD_RGB).view(3, 1, 1) + torch.tensor(MEAN_RGB).view(3, 1, 1)).permute(1, 2, 0).numpy()
    inner = (slice(border, 64 - border), slice(border, 32 - border))
    # cv2 interpolates uint8 in fixed point (and rounds), so allow about one grey level.
    np.testing.assert_allclose(raw[inner], ref[inner], atol=1.01, rtol=0)


def test_numpy_crops_are_the_device_crops(frames: dict[int, np.ndarray]) -> None:
    """The CPU runtime's crops (numpy, no torch) are grid_sample's: boxes inside, across every border, wholly
    outside and degenerate, over two frames of different sizes, in one call."""
    small = cv2.resize(frames[250], (320, 240))
    b1 = boxes(VAN, CAR, *PEOPLE_250, (-20, 300, 40, 420), (700, 500, 900, 700), (-80, -60, -10, -5), (300, 200, 300, 200))
    b2 = boxes((5, 5, 100, 230), (250, -30, 340, 100), (10.5, 20.25, 13.75, 80.5))
    got = cut_crops([frames[250], small], [b1, b2], 48, 24)
    with torch.inference_mode():
        ref = crop_batch([torch.from_numpy(frames[250]), torch.from_numpy(small)], [torch.from_numpy(b1), torch.from_numpy(b2)], 48, 24)
    assert got.shape == (len(b1) + len(b2), 3, 48, 24) and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref.contiguous().numpy(), atol=1e-4, rtol=0)


def test_numpy_crops_of_a_frame_wider_than_remaps_maps(frames: dict[int, np.ndarray]) -> None:
    """A frame over 32767 pixels wide (a panorama strip) is beyond remap's int16 maps: numpy's gather cuts the
    same crops as grid_sample there too, up to the far right edge."""
    wide = np.ascontiguousarray(np.tile(frames[250][:64], (1, 45, 1)))  # 64 x 34560
    b = boxes((100, 2, 140, 60), (34500, 0, 34580, 64), (20000.5, 10.25, 20030.75, 50.5))
    got = cut_crops([wide], [b], 48, 24)
    with torch.inference_mode():
        ref = crop_batch([torch.from_numpy(wide)], [torch.from_numpy(b)], 48, 24)
    np.testing.assert_allclose(got, ref.contiguous().numpy(), atol=1e-4, rtol=0)
