"""Face detectors (BlazeFace via LiteRT, optional YuNet via OpenCV)."""
