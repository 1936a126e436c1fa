"""Names of the exported signatures, their inputs and outputs (no TensorFlow import).

Shared by the SavedModel export (`keypoint_gnn.export.saved_model`), the TFLite export
(`keypoint_gnn.export.tflite`) and the TF Serving client (`keypoint_gnn.export.client`).
"""
SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SIGNATURES = (SERVING_DEFAULT, SERVING_BYTES)
INPUT_KEYS = {SERVING_DEFAULT: "images", SERVING_BYTES: "image_bytes"}
OUTPUT_KEYS = ("probabilities", "top_classes", "keypoints", "keypoint_scores")
