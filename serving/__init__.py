"""The ctloop KServe predictor: model loading, request decoding, metrics and the server."""
