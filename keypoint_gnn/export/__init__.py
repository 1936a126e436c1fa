"""Deployment: a trained classifier as a TF Serving SavedModel or a TFLite flat buffer.

Modules:

  signatures     signature names, input and output keys (no TensorFlow import)
  checks         what every export checks first: the model name (`check_export_name`, one
                 rule for every format) and finite weights (`check_finite_weights`)
  files          temporary names, cleaning of killed exports' leftovers, umask modes, strict
                 JSON
  preprocessing  in-graph preprocessing and keypoint units, shared by both formats
  saved_model    TF Serving SavedModel: `ServingModule`, integer versions, `export_saved_model`,
                 `read_export_info`, `resolve_version_dir`
  tflite         TFLite conversion and quantisation (`export_tflite`), `<path>.json` info files,
                 the `ai_edge_litert` runtime (`TFLiteClassifier`, `run_tflite`)
  client         TF Serving client: REST and gRPC requests for the exported signatures
  benchmark      batch-1 inference latency and size on disk of each format

The SavedModel, TFLite and checks names are re-exported here (`from keypoint_gnn.export import
export_saved_model`); `client` and `benchmark` are imported as submodules.
"""
from keypoint_gnn.export.checks import (
    check_export_name,
    check_finite_weights,
    non_finite_weights,
)
from keypoint_gnn.export.preprocessing import (
    MAX_TOP_CLASSES,
    convert_channels,
    feature_to_input_pixels,
    model_to_input_pixels,
    preprocess_images,
    top_k_count,
)
from keypoint_gnn.export.saved_model import (
    EXPORT_INFO_FILE,
    LABELS_FILE,
    ServingModule,
    export_saved_model,
    inference_model,
    list_versions,
    read_export_info,
    resolve_version_dir,
    write_saved_model,
)
from keypoint_gnn.export.signatures import (
    INPUT_KEYS,
    OUTPUT_KEYS,
    SERVING_BYTES,
    SERVING_DEFAULT,
    SIGNATURES,
)
from keypoint_gnn.export.tflite import (
    INT8_OPS,
    QUANTIZATIONS,
    TFLiteClassifier,
    convert_tflite,
    export_tflite,
    run_tflite,
    tflite_info_path,
    write_tflite_info,
)

__all__ = [
    "EXPORT_INFO_FILE",
    "INPUT_KEYS",
    "INT8_OPS",
    "LABELS_FILE",
    "MAX_TOP_CLASSES",
    "OUTPUT_KEYS",
    "QUANTIZATIONS",
    "SERVING_BYTES",
    "SERVING_DEFAULT",
    "SIGNATURES",
    "ServingModule",
    "TFLiteClassifier",
    "check_export_name",
    "check_finite_weights",
    "convert_channels",
    "convert_tflite",
    "export_saved_model",
    "export_tflite",
    "feature_to_input_pixels",
    "inference_model",
    "list_versions",
    "model_to_input_pixels",
    "non_finite_weights",
    "preprocess_images",
    "read_export_info",
    "resolve_version_dir",
    "run_tflite",
    "tflite_info_path",
    "top_k_count",
    "write_saved_model",
    "write_tflite_info",
]
