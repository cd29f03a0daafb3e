"""Face detection: MTCNN (P-Net, R-Net, O-Net cascade) in stages.infer.faces.mtcnn, with weights converted from
facenet-pytorch 2.6.0 by tools.convert_mtcnn; see stages/infer/weights/PROVENANCE-mtcnn.md."""
