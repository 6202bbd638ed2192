"""maskwatch device side: runs on the Raspberry Pi, imports no TensorFlow."""
