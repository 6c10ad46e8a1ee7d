"""The front end: load a model file (``load``), export it to rank-5 ONNX (``to_onnx``)."""
