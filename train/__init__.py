"""maskwatch training side (workstation, TensorFlow/Keras)."""
