"""The upload use cases: declare a file, complete it, send it in parts, or stream it through."""
