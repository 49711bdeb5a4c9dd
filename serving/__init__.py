"""The ctloop KServe predictor: model loading, request decoding, metrics, the server, and a
runner that starts it on loopback (`local_server`). `Dockerfile` builds its image."""
