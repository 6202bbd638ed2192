"""The scene benchmark (``maskwatch evaluate-scenes``): annotated scene photos through the
daemon's own detect -> filter -> classify code, scored face by face. TensorFlow-free."""
