"""taxotrain-runtime: run an exported taxotrain bundle (ONNX) with numpy, Pillow and ONNX Runtime only.

``taxotrain-runtime predict BUNDLE/ IMAGES_OR_FOLDERS... --out predictions.csv`` writes the same CSV as
``taxotrain predict RUN``. The training package uses this package's image loading, tree and decoding code, so both
read, preprocess and name records the same way.
"""

__version__ = "0.1.0"
