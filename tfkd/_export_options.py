"""What `export_tflite` accepts, in a module without Keras: pipeline configs are checked
against it without importing TensorFlow."""

QUANTIZATIONS = (None, "dynamic", "float16", "int8", "int16x8")
# The file's input/output dtypes each quantization can have.
IO_DTYPES = {
    None: ("float32",),
    "dynamic": ("float32",),
    "float16": ("float32",),
    "int8": ("float32", "int8", "uint8"),
    "int16x8": ("float32", "int16"),
}
