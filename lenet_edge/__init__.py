"""lenet-edge: a handwritten Persian digit recognizer for edge devices.

LeNet-5 trained with quantization-aware training, exported to a full-integer
int8 TFLite model, and benchmarked against the float model in LiteRT.
"""

__version__ = "0.1.0"
