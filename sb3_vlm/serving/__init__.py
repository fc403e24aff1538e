"""Serving: the FTRL-compatible inference server (model reload, request batching, HTTP app), the learner's hand-off
to servers, and the stdlib-only client (one self-contained file, for Python 3.8 ROS code). FastAPI and uvicorn are
imported only when an app is built."""
