"""The set-up page the daemon serves when ``[web] enabled = true``: live view, status, zones, test alert.

Standard library only (``http.server``'s ThreadingHTTPServer, as Picamera2's own MJPEG example)
plus OpenCV, which the Pi has anyway, for the JPEGs; ``tomlkit`` edits the config file keeping
its comments. One question per file: ``auth.py`` (who may in), ``stream.py`` (the frames the page
sees), ``zones.py`` (reading and saving the zones in the config file), ``page.py`` (what the daemon
and the page hand each other), ``server.py`` (what each URL answers); ``static/`` holds the page.
"""
